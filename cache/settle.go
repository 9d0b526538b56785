package cache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Write-behind. A mounted store lets a writer wait for the disk only: the
// file's bytes land in a staging file with write(2), and its commit
// renames that file into staged/ and records it as the file's content
// (meta.Content.Staged), so it is visible and survives the daemon at
// once. The settler then chunks, deduplicates and encodes staged files in
// the background and swaps each record to its chunks in one transaction
// (meta.Namespace.Settle); readers meanwhile read the staged file. The
// queue is durable with the records (putInode), so a store opened after a
// crash settles what was left.
//
// A staged file is removed only after the chunks that replaced it are
// synced, and settleGrace after the swap, so that a reader that read the
// old record just before still opens it (an open one keeps its bytes).
// Views plan on chunks: they settle a folder's staged files first
// (SettleNow), so a view's plan and its hot copies keep their key.

// settleGrace is how long a settled staged file stays for such readers.
const settleGrace = 10 * time.Second

// settleDelay is how old a staged file is before the settler takes it:
// checkpoints rotated out within it (save_total_limit, a rewrite) are
// never chunked at all, and their CPU stays the training job's.
const settleDelay = 5 * time.Second

// settleRetry is the first wait after a failed settle (ENOSPC, I/O); it
// doubles up to settleRetryMax. The staged content stays readable.
const (
	settleRetry    = 2 * time.Second
	settleRetryMax = time.Minute
)

type settler struct {
	s     *Store
	kicks chan struct{}
	done  chan struct{}
	halt  sync.Once // closes done
	wg    sync.WaitGroup

	// backlog is the bytes of queued staged files: settling them takes up
	// to as much room again, which writes keep free (EnsureStagingSpace).
	backlog atomic.Int64

	mu       sync.Mutex
	lastID   uint64
	unsynced map[uint64]*os.File // staged, not fsynced yet
	doomed   []doomedFile        // settled or nobody's, to remove
	one      sync.Mutex          // one staged file settles at a time
}

type doomedFile struct {
	id    uint64
	since time.Time
}

func newSettler(s *Store) *settler {
	return &settler{s: s, kicks: make(chan struct{}, 1), done: make(chan struct{}), unsynced: map[uint64]*os.File{}}
}

// StagedDir holds the staged content of files committed but not chunked
// yet.
func (s *Store) StagedDir() string { return filepath.Join(s.dir, "staged") }

func (s *Store) stagedPath(id uint64) string {
	return filepath.Join(s.StagedDir(), strconv.FormatUint(id, 16))
}

// WritesBehind reports whether a commit may stage its file (Stage) rather
// than chunk it first. In front of a bucket it may not: a close waits for
// the bucket, which takes chunks.
func (s *Store) WritesBehind() bool { return s.writeBehind && !s.cachesBucket.Load() }

// Stage takes f, a staging file of size bytes, as the content of a file
// about to be committed: the record that holds the returned content queues
// it to be chunked. The store owns f from here on, whatever the outcome.
func (s *Store) Stage(f *os.File, size int64) (*meta.Content, error) {
	st := s.settler
	st.mu.Lock()
	id := max(uint64(time.Now().UnixNano()), st.lastID+1) // ordered, never reused
	st.lastID = id
	st.mu.Unlock()
	if err := os.Rename(f.Name(), s.stagedPath(id)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("stage %s: %w", f.Name(), err)
	}
	st.mu.Lock()
	st.unsynced[id] = f
	st.mu.Unlock()
	s.metrics.staged.Add(size)
	st.backlog.Add(size) // the record that takes it kicks the settler
	return &meta.Content{Size: size, Staged: id}, nil
}

func (st *settler) kick() {
	select {
	case st.kicks <- struct{}{}:
	default:
	}
}

// syncStaged makes the staged files written so far durable, with their
// names: a synced record never names a staged file that is not.
func (st *settler) syncStaged() error {
	st.mu.Lock()
	files := st.unsynced
	st.unsynced = map[uint64]*os.File{}
	st.mu.Unlock()
	var errs []error
	for _, f := range files {
		if err := f.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("sync %s: %w", f.Name(), err))
		}
		f.Close()
	}
	if len(files) > 0 {
		errs = append(errs, syncDir(st.s.StagedDir()))
	}
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
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
			st.s.log.Error("chunking staged files failed; they stay readable as staged, retrying", "in", wait, "err", err)
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
			st.s.log.Warn("removing settled staged files failed; retrying", "err", err)
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

// settleAll chunks every queued staged file at least minAge old, oldest
// first, until the queue is done or stop is closed, and drops those nobody
// holds. It returns how long until the youngest file it left is old
// enough, 0 if it left none.
func (st *settler) settleAll(stop <-chan struct{}, minAge time.Duration) (time.Duration, error) {
	var after time.Duration
	err := st.s.Namespace.StagedFiles(func(id, ino uint64) error {
		select {
		case <-stop:
			return errStopped
		default:
		}
		wait, err := st.settle(id, ino, minAge)
		if wait > 0 && (after == 0 || wait < after) {
			after = wait
		}
		return err
	})
	return after, err
}

var errStopped = errors.New("stopped")

// SettleNow chunks the staged content of records before it returns, for
// those who plan on chunks (views): what they plan from does not change
// under them.
func (s *Store) SettleNow(ins ...*meta.Inode) error {
	for _, in := range ins {
		if id := in.Content.Staged; id != 0 {
			if _, err := s.settler.settle(id, in.Ino, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// settle chunks staged file id of inode ino and swaps the record to the
// chunks, unless the record moved on meanwhile; a file no longer queued
// was settled already. A file younger than minAge is left for later: it
// returns how much later.
func (st *settler) settle(id, ino uint64, minAge time.Duration) (time.Duration, error) {
	st.one.Lock()
	defer st.one.Unlock()
	s := st.s
	if queued, err := s.Namespace.Queued(id); err != nil || !queued {
		return 0, err
	}
	in, err := s.GetInode(ino)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return 0, err
	}
	held := err == nil && in.Content.Staged == id
	if age := time.Since(time.Unix(0, int64(id))); held && age >= 0 && age < minAge { // ids are staging times
		return minAge - age, nil
	}
	var size int64
	if fi, err := os.Stat(s.stagedPath(id)); err == nil {
		size = fi.Size()
	}
	var since time.Time // a file nobody holds goes at once
	if held {
		f, err := os.Open(s.stagedPath(id))
		if err != nil {
			return 0, fmt.Errorf("inode %d: staged content: %w", ino, err)
		}
		c, err := s.Ingest(f) // its chunks stay live until the swap commits
		f.Close()
		if err == nil {
			_, err = s.Namespace.Settle(ino, id, c)
		}
		if err != nil {
			return 0, fmt.Errorf("inode %d: chunk staged file %s: %w", ino, s.stagedPath(id), err)
		}
		s.metrics.settled.Add(c.Size)
		since = time.Now()
	} else if _, err := s.Namespace.Settle(ino, id, nil); err != nil { // nobody's: off the queue
		return 0, err
	}
	st.mu.Lock()
	if f := st.unsynced[id]; f != nil {
		f.Close() // the chunks are synced before the file goes
		delete(st.unsynced, id)
	}
	st.doomed = append(st.doomed, doomedFile{id, since})
	st.mu.Unlock()
	st.backlog.Add(-size)
	return 0, nil
}

func (st *settler) hasDoomed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.doomed) > 0
}

// removeDoomed removes the staged files settled at least grace ago, once
// what replaced them is durable: the chunks, and the records that no
// longer name them.
func (st *settler) removeDoomed(grace time.Duration) error {
	st.mu.Lock()
	var ripe []uint64
	keep := st.doomed[:0]
	for _, d := range st.doomed {
		if time.Since(d.since) >= grace {
			ripe = append(ripe, d.id)
		} else {
			keep = append(keep, d)
		}
	}
	st.doomed = keep
	st.mu.Unlock()
	if len(ripe) == 0 {
		return nil
	}
	if err := st.s.syncChunks(); err != nil {
		st.mu.Lock()
		for _, id := range ripe {
			st.doomed = append(st.doomed, doomedFile{id, time.Time{}})
		}
		st.mu.Unlock()
		return err
	}
	for _, id := range ripe {
		if err := os.Remove(st.s.stagedPath(id)); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return nil
}

// clearOrphans removes staged files no queued record names: a crash
// between a settle and the removal of its file leaves them.
func (st *settler) clearOrphans() error {
	queued := map[string]bool{}
	err := st.s.Namespace.StagedFiles(func(id, ino uint64) error {
		queued[strconv.FormatUint(id, 16)] = true
		st.lastID = max(st.lastID, id)
		if fi, err := os.Stat(st.s.stagedPath(id)); err == nil {
			st.backlog.Add(fi.Size())
		}
		return nil
	})
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(st.s.StagedDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !queued[e.Name()] {
			if err := os.Remove(filepath.Join(st.s.StagedDir(), e.Name())); err != nil && !errors.Is(err, syscall.ENOENT) {
				return err
			}
		}
	}
	return nil
}

// stagedReader reads staged content from its file.
type stagedReader struct {
	f   *os.File
	err error // the file would not open
}

// openStaged opens the staged file of c; the file closes when the reader
// holding it is garbage.
func (s *Store) openStaged(c *meta.Content) *stagedReader {
	f, err := os.Open(s.stagedPath(c.Staged))
	if err != nil {
		return &stagedReader{err: fmt.Errorf("staged content: %w: %w", err, chunk.ErrCorrupt)}
	}
	sr := &stagedReader{f: f}
	runtime.AddCleanup(sr, func(f *os.File) { f.Close() }, f)
	return sr
}

// readAt reads as FileReader.ReadAt does: short only at the end.
func (sr *stagedReader) readAt(r *FileReader, p []byte, off int64) (int, error) {
	if sr.err != nil {
		return 0, fmt.Errorf("%s: %w", r.name, sr.err)
	}
	want := min(int64(len(p)), r.Size()-off)
	n, err := sr.f.ReadAt(p[:want], off)
	if int64(n) == want {
		if want < int64(len(p)) {
			return n, io.EOF
		}
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("staged file %s ends at %d bytes, the record says %d: %w", sr.f.Name(), off+int64(n), r.Size(), chunk.ErrCorrupt)
		r.store.log.Error("read failed verification", "file", r.name, "err", err)
	}
	return n, fmt.Errorf("%s: %w", r.name, err)
}

// CheckStaged reports whether staged content c has its staged file, of
// its length. The bytes have no hash to check before they are chunked.
func (s *Store) CheckStaged(c *meta.Content) error {
	fi, err := os.Stat(s.stagedPath(c.Staged))
	if err != nil {
		return fmt.Errorf("staged content: %w", err)
	}
	if fi.Size() != c.Size {
		return fmt.Errorf("staged file %s holds %d bytes, the record says %d", fi.Name(), fi.Size(), c.Size)
	}
	return nil
}
