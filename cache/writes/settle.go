package writes

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/durable"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// The settler. A staged file is chunked once it is settleDelay quiet,
// oldest first, and the record swapped to its chunks (meta.Namespace.Settle)
// if it still names that file; a file removed or rewritten before its turn
// is dropped unread. The queue is durable with the records (putInode), so
// a store opened after a crash settles what was left.
//
// Order on disk: the chunks of a batch of settled files are synced before
// the records that name them are written, and a staged file is removed
// only once the record that no longer names it is synced too, and
// settleGrace after the swap, so that a reader that read the old record
// just before still opens it (an open one keeps its bytes). Views plan on
// chunks: they settle a folder's staged files first (SettleNow), so a
// view's plan and its hot copies keep their key.
//
// A writer that appends to a file whose content is staged appends to the
// staged file itself (see Draft): the bytes a record names never change,
// and a file no lease holds is the only kind the settler takes, so an
// append-and-fsync log costs what it appends, not its whole length.
//
// The settler wakes when a commit stages a file, when a lease ends, and
// when a file it left for being young is old enough: not at every change
// of the namespace.

// settleGrace is how long a settled staged file stays for such readers.
const settleGrace = 10 * time.Second

// settleDelay is how long a staged file is quiet before the settler takes
// it: checkpoints rotated out within it (save_total_limit, a rewrite) are
// never chunked at all, and their CPU stays the training job's.
const settleDelay = 5 * time.Second

// settleRetry is the first wait after a failed settle (ENOSPC, I/O); it
// doubles up to settleRetryMax. The staged content stays readable.
const (
	settleRetry    = 2 * time.Second
	settleRetryMax = time.Minute
)

// settleBatch bounds the staged files, and their bytes, chunked before one
// sync makes their chunks durable and their records are swapped.
const (
	settleBatchFiles = 64
	settleBatchBytes = 256 << 20
)

type settler struct {
	w     *Path
	kicks chan struct{}
	done  chan struct{}
	halt  sync.Once // closes done
	wg    sync.WaitGroup

	// backlog is the bytes of queued staged files, as allocated on disk:
	// settling them takes up to as much room again, which writes keep free
	// (EnsureStagingSpace).
	backlog atomic.Int64

	mu       sync.Mutex
	lastID   uint64
	unsynced map[uint64]*os.File // staged or appended to, not fsynced yet
	counted  map[uint64]int64    // each staged file's share of backlog
	// doomed are the staged files settled, or nobody's, to remove once
	// what replaced them is durable and their grace is over.
	doomed map[uint64]time.Time
	// leases count the opens of a staged file in place: writers appending
	// to it, a backing file's opens. The settler takes a file only with
	// none; a lease taken while it is chunked stops the chunking, or skips
	// its swap, and the file is chunked again once the leases end (the
	// checkpoint saved last, read back at once, is read from its staged
	// file). A file being swapped or doomed takes no lease.
	leases   map[uint64]int
	swapping map[uint64]bool
	// quiet is when a file staged before was last appended to, or its
	// last lease ended; files staged once are quiet since their id, the
	// staging time.
	quiet map[uint64]time.Time
	// quarantined are the staged files that could not be settled for a
	// fault of their own: left queued and readable as far as they are, not
	// tried again until the store opens again.
	quarantined map[uint64]bool

	syncMu sync.Mutex // one syncStaged at a time, see syncStaged
	failed error      // a staged file's failed sync: every later one fails
	one    sync.Mutex // one batch settles at a time
	// beforeSwap, if set, runs after a batch's chunks are durable and
	// before its records are swapped: tests hold a batch there.
	beforeSwap func()
}

func newSettler(w *Path) *settler {
	return &settler{w: w, kicks: make(chan struct{}, 1), done: make(chan struct{}),
		unsynced: map[uint64]*os.File{}, counted: map[uint64]int64{}, doomed: map[uint64]time.Time{},
		leases: map[uint64]int{}, swapping: map[uint64]bool{}, quiet: map[uint64]time.Time{}, quarantined: map[uint64]bool{}}
}

// stage takes f, a draft file of size bytes, as the content of a file
// about to be committed: the record that holds the returned content queues
// it to be chunked. With durably, f is durable under its staged name
// before stage returns (see appendedToSynced). The path owns f from here
// on, whatever the outcome.
func (w *Path) stage(f *os.File, size int64, durably bool) (*meta.Content, error) {
	st := w.settler
	st.mu.Lock()
	id := max(uint64(time.Now().UnixNano()), st.lastID+1) // ordered, never reused
	st.lastID = id
	st.mu.Unlock()
	if err := os.Rename(f.Name(), w.st.StagedPath(id)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("stage %s: %w", f.Name(), err)
	}
	used := allocated(f)
	if durably {
		if err := st.syncNow(f, true); err != nil {
			f.Close()
			os.Remove(w.st.StagedPath(id))
			return nil, fmt.Errorf("stage %s: %w", f.Name(), err)
		}
	}
	st.mu.Lock()
	if durably {
		f.Close()
	} else {
		st.unsynced[id] = f
	}
	st.counted[id] = used
	st.mu.Unlock()
	w.metrics.staged.Add(size)
	st.backlog.Add(used) // the commit that records it kicks the settler
	return &meta.Content{Size: size, Staged: id}, nil
}

// unstage gives up staged content c that no record took (its file was
// unlinked while it was written): its staged file and its backlog go at
// once. Readers that opened it keep its bytes.
func (w *Path) unstage(c *meta.Content) {
	st := w.settler
	st.mu.Lock()
	if f := st.unsynced[c.Staged]; f != nil {
		f.Close()
		delete(st.unsynced, c.Staged)
	}
	st.backlog.Add(-st.counted[c.Staged])
	delete(st.counted, c.Staged)
	st.mu.Unlock()
	os.Remove(w.st.StagedPath(c.Staged))
}

// lease opens the staged file of content c for a writer to append to
// (bytes past c.Size, which no record names), or for a backing file. ok is
// false when c is not staged, or its file is being swapped for its chunks
// or going: the writer then copies. release ends the lease; the settler
// takes no file under a lease.
func (w *Path) lease(c *meta.Content) (f *os.File, release func(), ok bool) {
	st := w.settler
	id := c.Staged
	if id == 0 {
		return nil, nil, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, doomed := st.doomed[id]; doomed || st.swapping[id] || st.quarantined[id] {
		return nil, nil, false
	}
	f, err := os.OpenFile(w.st.StagedPath(id), os.O_RDWR, 0)
	if err != nil {
		return nil, nil, false
	}
	st.leases[id]++
	var once sync.Once
	return f, func() {
		once.Do(func() {
			st.mu.Lock()
			if st.leases[id]--; st.leases[id] <= 0 {
				delete(st.leases, id)
			}
			if _, doomed := st.doomed[id]; !doomed {
				// Quiet from here: a file opened again and again is
				// chunked once its opens pause, not restarted at each.
				st.quiet[id] = time.Now()
			}
			st.mu.Unlock()
			st.kick()
		})
	}, true
}

// restage takes the staged file of content c, appended to in place
// through f (from lease) up to size bytes, as the content of a file about
// to be committed. With durably, what was appended is durable before
// restage returns (see appendedToSynced). The path owns f from here on,
// but for a failed sync: the writer's then, to take back what it appended.
func (w *Path) restage(f *os.File, c *meta.Content, size int64, durably bool) (*meta.Content, error) {
	st := w.settler
	if durably {
		if err := st.syncNow(f, false); err != nil {
			return nil, fmt.Errorf("append to %s: %w", f.Name(), err)
		}
	}
	used := allocated(f)
	st.mu.Lock()
	if old := st.unsynced[c.Staged]; old != nil {
		old.Close()
	}
	if durably {
		delete(st.unsynced, c.Staged)
		f.Close()
	} else {
		st.unsynced[c.Staged] = f
	}
	st.backlog.Add(used - st.counted[c.Staged])
	st.counted[c.Staged] = used
	st.quiet[c.Staged] = time.Now()
	st.mu.Unlock()
	w.metrics.staged.Add(size - c.Size)
	return &meta.Content{Size: size, Staged: c.Staged}, nil
}

// synced reports whether content c is durable: chunks (durable before any
// record names them), or a staged file no write since its last sync
// changed.
func (w *Path) synced(c *meta.Content) bool {
	if c.Staged == 0 {
		return true
	}
	st := w.settler
	st.mu.Lock()
	defer st.mu.Unlock()
	_, dirty := st.unsynced[c.Staged]
	return !dirty
}

// syncNow makes f durable, and with dir the staged folder too, as
// syncStaged would: after any sync under way, and failing for good once a
// sync failed.
func (st *settler) syncNow(f *os.File, dir bool) error {
	st.syncMu.Lock()
	defer st.syncMu.Unlock()
	if st.failed != nil {
		return st.failed
	}
	err := durable.File(f)
	if err == nil && dir {
		err = durable.Dir(st.w.st.StagedDir())
	}
	st.failed = err
	return err
}

func (st *settler) kick() {
	select {
	case st.kicks <- struct{}{}:
	default:
	}
}

// syncStaged makes the staged files written so far durable, with their
// names: a synced record never names a staged file that is not. Like the
// packs' Sync, a second caller waits for the first, and a failed sync
// fails every later one.
func (st *settler) syncStaged() error {
	st.syncMu.Lock()
	defer st.syncMu.Unlock()
	st.mu.Lock()
	files := st.unsynced
	st.unsynced = map[uint64]*os.File{}
	st.mu.Unlock()
	var errs []error
	for _, f := range files {
		if err := durable.File(f); err != nil {
			errs = append(errs, err)
		}
		f.Close()
	}
	if len(files) > 0 {
		errs = append(errs, durable.Dir(st.w.st.StagedDir()))
	}
	if st.failed == nil {
		st.failed = errors.Join(errs...)
	}
	return st.failed
}

// start settles in the background until stop.
func (st *settler) start() {
	st.wg.Add(1)
	go st.loop()
	st.kick() // what a crash left
}

func (st *settler) loop() {
	defer st.wg.Done()
	wait := settleRetry
	var ripe <-chan time.Time // when the youngest file skipped is old enough
	for {
		var tick <-chan time.Time
		if st.hasDoomed() {
			tick = time.After(settleGrace / 4)
		}
		select {
		case <-st.kicks:
		case <-tick:
		case <-ripe:
		case <-st.done:
			return
		}
		after, err := st.settleAll(st.done, settleDelay)
		if errors.Is(err, errStopped) {
			return
		} else if err != nil {
			st.w.log.Error("chunking staged files failed; they stay readable as staged, retrying", "in", wait, "err", err)
			select {
			case <-time.After(wait):
			case <-st.done:
				return
			}
			wait = min(2*wait, settleRetryMax)
			st.kick()
			continue
		}
		wait, ripe = settleRetry, nil
		if after > 0 {
			ripe = time.After(after)
		}
		if err := st.removeDoomed(settleGrace); err != nil {
			st.w.log.Warn("removing settled staged files failed; retrying", "err", err)
		}
	}
}

// stop ends the background settling, then settles what is left and
// removes every settled staged file: a store at rest holds chunks only.
func (st *settler) stop() error {
	st.halt.Do(func() { close(st.done) })
	st.wg.Wait()
	_, err := st.settleAll(nil, 0)
	if err == nil {
		err = st.removeDoomed(0)
	}
	return errors.Join(err, st.syncStaged())
}

var errStopped = errors.New("stopped")

// queuedFile is a staged file on the queue and the inode it was staged for.
type queuedFile struct{ id, ino uint64 }

// settleAll chunks every queued staged file quiet for at least minAge,
// oldest first, until the queue is done or stop is closed, and drops those
// nobody holds. It returns how long until the youngest file it left is
// quiet long enough, 0 if it left none. A file that fails for a fault of
// its own is quarantined and the rest go on.
func (st *settler) settleAll(stop <-chan struct{}, minAge time.Duration) (time.Duration, error) {
	var queued []queuedFile
	err := st.w.st.Namespace().StagedFiles(func(id, ino uint64) error {
		queued = append(queued, queuedFile{id, ino})
		return nil
	})
	if err != nil {
		return 0, err
	}
	var after time.Duration
	for len(queued) > 0 {
		select {
		case <-stop:
			return after, errStopped
		default:
		}
		n, wait, err := st.settle(queued, minAge)
		after = sooner(after, wait)
		if err != nil {
			return after, err
		}
		queued = queued[n:]
	}
	return after, nil
}

// sooner is the shorter of two waits, 0 standing for none.
func sooner(a, b time.Duration) time.Duration {
	if b > 0 && (a == 0 || b < a) {
		return b
	}
	return a
}

// settling is a staged file chunked in a batch, waiting for its swap.
type settling struct {
	queuedFile
	content *meta.Content
	release func() // the chunks' pins, held until the swap commits
	changed int64  // the staged file's ctime when it was chunked (see changedSince)
}

// settle takes one batch from the front of queued: it chunks each staged
// file quiet for minAge that its record still holds, makes their chunks
// durable with one sync, then swaps each record to its chunks, unless the
// record moved on meanwhile. Files nobody holds go off the queue unread.
// It returns how many of queued it took, and how long until the youngest
// file it left is quiet long enough.
func (st *settler) settle(queued []queuedFile, minAge time.Duration) (taken int, after time.Duration, err error) {
	st.one.Lock()
	defer st.one.Unlock()
	s := st.w.st
	var batch []settling
	var batchBytes int64
	defer func() {
		for _, b := range batch {
			st.endSwap(b.id)
			b.release()
		}
	}()
	for ; taken < len(queued) && len(batch) < settleBatchFiles && batchBytes < settleBatchBytes; taken++ {
		q := queued[taken]
		c, wait, err := st.chunk(q, minAge)
		after = sooner(after, wait)
		var own *stagedFileError
		if errors.As(err, &own) {
			st.quarantine(q, err)
			continue
		}
		if err != nil {
			return taken, after, err
		}
		if c != nil {
			batch = append(batch, *c)
			batchBytes += c.content.Size
		}
	}
	if len(batch) == 0 {
		return taken, after, nil
	}
	// The chunks are durable before any record that names them is written.
	if err := s.SyncChunks(); err != nil {
		return taken, after, fmt.Errorf("settle: %w", err)
	}
	if st.beforeSwap != nil {
		st.beforeSwap()
	}
	swapped := 0
	defer func() {
		st.w.log.Debug("staged files chunked", "files", len(batch), "swapped", swapped, "bytes", batchBytes)
	}()
	for _, b := range batch {
		if !st.startSwap(b.id) {
			continue // leased since it was chunked: chunked again once the leases end
		}
		if st.changedSince(b) { // left queued: chunked again once quiet
			after = sooner(after, settleDelay)
			continue
		}
		settled, err := s.Namespace().Settle(b.ino, b.id, b.content)
		if errors.Is(err, meta.ErrSettleRaced) { // left queued: chunked again once quiet
			st.w.log.Debug("a staged file's record moved on while it was chunked", "err", err)
			after = sooner(after, settleDelay)
			continue
		}
		if err != nil {
			return taken, after, fmt.Errorf("inode %d: swap staged file %s for its chunks: %w", b.ino, s.StagedPath(b.id), err)
		}
		if settled {
			swapped++
			st.w.metrics.settled.Add(b.content.Size)
			st.doom(b.id, time.Now())
		} else {
			st.doom(b.id, time.Time{}) // removed or rewritten while chunked: nobody's
		}
	}
	return taken, after, nil
}

// stagedFileError is a staged file that could not be read whole: its own
// fault, not the store's (a full disk, a failed pack write).
type stagedFileError struct{ err error }

func (e *stagedFileError) Error() string { return e.err.Error() }
func (e *stagedFileError) Unwrap() error { return e.err }

// stagedFileReader tags the errors of reading a staged file.
type stagedFileReader struct{ r io.Reader }

func (r stagedFileReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &stagedFileError{err}
	}
	return n, err
}

// chunk decides what to do with queued file q: nothing yet (a file young,
// appended to, or a batch's own), off the queue (nobody's), or chunked, as
// the returned settling, which holds the file as being settled.
func (st *settler) chunk(q queuedFile, minAge time.Duration) (*settling, time.Duration, error) {
	s := st.w.st
	if queued, err := s.Namespace().Queued(q.id); err != nil || !queued {
		return nil, 0, err
	}
	in, err := s.Namespace().GetInode(q.ino)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return nil, 0, err
	}
	held := err == nil && in.Content.Staged == q.id
	st.mu.Lock()
	leased, quarantined := st.leases[q.id] > 0, st.quarantined[q.id]
	quiet, appended := st.quiet[q.id]
	st.mu.Unlock()
	if leased || quarantined {
		return nil, 0, nil // the last lease's release kicks the settler
	}
	if !appended {
		quiet = time.Unix(0, int64(q.id)) // ids are staging times
	}
	if age := time.Since(quiet); held && age >= 0 && age < minAge {
		return nil, minAge - age, nil
	}
	if !held { // nobody's: off the queue, and gone at once
		if !st.startSwap(q.id) { // an unlinked file's writer holds it
			return nil, 0, nil
		}
		defer st.endSwap(q.id)
		if _, err := s.Namespace().Settle(q.ino, q.id, nil); errors.Is(err, meta.ErrSettleRaced) {
			return nil, settleDelay, nil
		} else if err != nil {
			return nil, 0, err
		}
		st.doom(q.id, time.Time{})
		return nil, 0, nil
	}
	changed, c, release, err := st.ingest(q, in.Content.Size)
	if errors.Is(err, errLeased) {
		return nil, 0, nil // the last lease's release kicks the settler
	}
	if err != nil {
		return nil, 0, fmt.Errorf("inode %d: chunk staged file %s: %w", q.ino, s.StagedPath(q.id), err)
	}
	return &settling{q, c, release, changed}, 0, nil
}

// changedSince reports whether b's staged file changed since it was
// chunked, and if so leaves it queued, to be chunked again once quiet. No
// commit changes a file the settler takes, but the kernel may: a shared
// writable mapping of a file on its backing file outlives the last close,
// and after a crash of the daemon a backing file's writers write on.
// Swapping would lose what they wrote.
func (st *settler) changedSince(b settling) bool {
	var now unix.Stat_t
	if err := unix.Stat(st.w.st.StagedPath(b.id), &now); err != nil || now.Ctim.Nano() == b.changed {
		return false
	}
	st.mu.Lock()
	st.quiet[b.id] = time.Now()
	st.mu.Unlock()
	st.w.log.Warn("a staged file changed while it was chunked: chunked again once quiet", "inode", b.ino, "file", st.w.st.StagedPath(b.id))
	return true
}

// ingest chunks the first size bytes of staged file q, which must hold
// them: bytes past them are a writer's not committed yet.
// It returns the file's ctime from before it was read, which a later write
// changes (see changedSince).
func (st *settler) ingest(q queuedFile, size int64) (int64, *meta.Content, func(), error) {
	f, err := os.Open(st.w.st.StagedPath(q.id))
	if err != nil {
		return 0, nil, nil, &stagedFileError{err}
	}
	defer f.Close()
	var fi unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fi); err != nil {
		return 0, nil, nil, &stagedFileError{err}
	} else if fi.Size < size {
		return 0, nil, nil, &stagedFileError{fmt.Errorf("holds %d bytes, its record says %d", fi.Size, size)}
	}
	c, release, err := st.w.st.Ingest(stagedFileReader{unleasedReader{st, q.id, io.LimitReader(f, size)}})
	if err == nil && c.Size != size {
		release()
		err = &stagedFileError{fmt.Errorf("read %d bytes of %d", c.Size, size)}
	}
	if err != nil && st.leased(q.id) { // a lease between a check and a read, cutting it, say
		err = errLeased
	}
	return fi.Ctim.Nano(), c, release, err
}

// errLeased stops the chunking of a staged file a lease took meanwhile.
var errLeased = errors.New("leased while chunked")

// unleasedReader reads staged file id until a lease takes it: its swap
// would be skipped, so what is left to chunk would be wasted, and the
// disk is the reader's.
type unleasedReader struct {
	st *settler
	id uint64
	r  io.Reader
}

func (r unleasedReader) Read(p []byte) (int, error) {
	if r.st.leased(r.id) {
		return 0, errLeased
	}
	return r.r.Read(p)
}

func (st *settler) leased(id uint64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.leases[id] > 0
}

// startSwap marks staged file id as being swapped for its chunks, when no
// lease holds it: no lease starts from here on.
func (st *settler) startSwap(id uint64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.leases[id] > 0 {
		return false
	}
	st.swapping[id] = true
	return true
}

func (st *settler) endSwap(id uint64) {
	st.mu.Lock()
	delete(st.swapping, id)
	st.mu.Unlock()
}

// quarantine leaves staged file q queued and readable as far as it reads,
// and out of the settler's way until the store opens again.
func (st *settler) quarantine(q queuedFile, err error) {
	st.mu.Lock()
	st.quarantined[q.id] = true
	st.backlog.Add(-st.counted[q.id]) // not chunked this session
	st.counted[q.id] = 0
	st.mu.Unlock()
	st.w.log.Error("a staged file cannot be chunked: it stays staged, readable as far as it reads, and is tried again at the next mount",
		"inode", q.ino, "file", st.w.st.StagedPath(q.id), "err", err)
}

// doom queues staged file id for removal, since when: its record moved to
// chunks then, or nobody holds it (the zero time).
func (st *settler) doom(id uint64, since time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if f := st.unsynced[id]; f != nil {
		f.Close() // its content is durable as chunks, or nobody's
		delete(st.unsynced, id)
	}
	st.doomed[id] = since
	st.backlog.Add(-st.counted[id])
	delete(st.counted, id)
	delete(st.quiet, id)
}

func (st *settler) hasDoomed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.doomed) > 0
}

// removeDoomed removes the staged files settled at least grace ago, once
// what replaced them is durable: the chunks, and the records that no
// longer name them. No file goes while a check holds the store Frozen.
func (st *settler) removeDoomed(grace time.Duration) error {
	st.mu.Lock()
	var ripe []uint64
	for id, since := range st.doomed {
		if time.Since(since) >= grace {
			ripe = append(ripe, id)
		}
	}
	st.mu.Unlock()
	if len(ripe) == 0 {
		return nil
	}
	if err := st.w.st.Sync(); err != nil {
		return err
	}
	return st.w.st.Unfrozen(func() error {
		for _, id := range ripe {
			if err := os.Remove(st.w.st.StagedPath(id)); err != nil && !errors.Is(err, syscall.ENOENT) {
				return err
			}
			st.mu.Lock()
			delete(st.doomed, id)
			st.mu.Unlock()
		}
		return nil
	})
}

// clearOrphans removes staged files no queued record names: a crash
// between a settle and the removal of its file leaves them. After an
// unclean shutdown it also finds the files whose staged content the crash
// cut short (closed, never synced): see dropLost.
func (st *settler) clearOrphans(unclean bool) error {
	queued := map[string]bool{}
	var lost []queuedFile
	err := st.w.st.Namespace().StagedFiles(func(id, ino uint64) error {
		queued[strconv.FormatUint(id, 16)] = true
		st.lastID = max(st.lastID, id)
		f, err := os.Open(st.w.st.StagedPath(id))
		if err == nil {
			st.counted[id] = allocated(f)
			st.backlog.Add(st.counted[id])
		}
		if unclean {
			if short, err := st.cutShort(id, ino, f); err != nil {
				return err
			} else if short {
				lost = append(lost, queuedFile{id, ino})
			}
		}
		if f != nil {
			f.Close()
		}
		return nil
	})
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(st.w.st.StagedDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !queued[e.Name()] {
			if err := os.Remove(filepath.Join(st.w.st.StagedDir(), e.Name())); err != nil && !errors.Is(err, syscall.ENOENT) {
				return err
			}
		}
	}
	return st.dropLost(lost)
}

// cutShort reports whether the record of inode ino names staged file id
// (open as f, nil if it would not open) and the file holds less than it.
func (st *settler) cutShort(id, ino uint64, f *os.File) (bool, error) {
	in, err := st.w.st.Namespace().GetInode(ino)
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	if err != nil || in.Content.Staged != id {
		return false, err
	}
	if f == nil {
		return true, nil
	}
	fi, err := f.Stat()
	return err == nil && fi.Size() < in.Content.Size, err
}

// dropLost removes the files whose staged content a crash cut short. Such
// a file was closed and never synced (a sync makes the staged file durable
// before it returns), and the promise after a power cut is that it reads
// back as a whole version or not at all: its earlier version is not kept
// once a commit replaced it, so its names go, each logged.
func (st *settler) dropLost(lost []queuedFile) error {
	for _, q := range lost {
		paths, err := st.w.st.Namespace().Unlink(q.ino)
		if err != nil {
			return fmt.Errorf("drop inode %d, cut short by a crash: %w", q.ino, err)
		}
		st.w.log.Error("a file closed but never synced was cut short by a crash and is removed (it reads back whole or not at all)",
			"paths", paths, "staged_file", st.w.st.StagedPath(q.id))
		if _, err := st.w.st.Namespace().Settle(q.ino, q.id, nil); err != nil {
			return err
		}
		st.backlog.Add(-st.counted[q.id])
		delete(st.counted, q.id)
		os.Remove(st.w.st.StagedPath(q.id))
	}
	return nil
}

// allocated is the disk space f takes: a sparse file's holes are free.
func allocated(f *os.File) int64 {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}
