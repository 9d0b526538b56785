// Package pack keeps chunk values in append-only pack files, written with
// write(2) and read with pread. The index of where each chunk is lives
// elsewhere (Badger, in cache); a record carries its chunk's hash, so a
// read can check the index pointed it at the right one.
package pack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/durable"
	"golang.org/x/sys/unix"
)

// Chunk values live in append-only pack files, written with write(2) and
// read with pread, and Badger holds only where each one is. Badger's own
// value log is written through a memory map: every new page is faulted in
// and zeroed, and the mapped pages count in the daemon's resident memory,
// which then grows with the checkpoint. A pack file is plain page cache.
//
// A record is the chunk's hash, the value length and the value (see
// chunk.go). The hash lets a read check that the index points at the right
// record, and makes a pack readable without the index.
const (
	RecordHeader = 32 + 4
	TargetSize   = 256 << 20
	suffix       = ".pack"
)

// Loc is where a chunk's record is: the Badger value of its chunk key.
type Loc struct {
	Pack   uint32
	Offset int64  // of the record
	Len    uint32 // of the value, without the record header
}

const locLen = 4 + 8 + 4

// Encode is the location as the index stores it.
func (l Loc) Encode() []byte {
	b := make([]byte, locLen)
	binary.LittleEndian.PutUint32(b, l.Pack)
	binary.LittleEndian.PutUint64(b[4:], uint64(l.Offset))
	binary.LittleEndian.PutUint32(b[12:], l.Len)
	return b
}

// DecodeLoc reads a location the index stored.
func DecodeLoc(b []byte) (Loc, error) {
	if len(b) != locLen {
		return Loc{}, fmt.Errorf("chunk location of %d bytes: %w", len(b), chunk.ErrCorrupt)
	}
	return Loc{
		Pack:   binary.LittleEndian.Uint32(b),
		Offset: int64(binary.LittleEndian.Uint64(b[4:])),
		Len:    binary.LittleEndian.Uint32(b[12:]),
	}, nil
}

// packs is the set of pack files of a store. Appends reserve their range
// under the lock and write outside it, so the ingest workers write in
// parallel.
type Set struct {
	dir    string
	target int64 // a new pack is started past this size

	mu      sync.Mutex
	files   map[uint32]*os.File // opened on first use
	cur     *os.File            // pack being appended to; nil until the first write
	curID   uint32
	curSize int64
	nextID  uint32
	dirty   map[uint32]*os.File // written since the last sync
	created bool                // a pack file was made since the last sync

	// syncMu makes one Sync at a time: a second caller waits for the
	// first, then syncs what the first did not take, so that neither
	// returns before what was dirty at its start is durable.
	syncMu sync.Mutex
	// failed holds the packs whose sync failed: Linux forgets a failed
	// writeback once it has reported it, so a later fsync would succeed
	// with the bytes lost. Every later Sync fails with their error.
	failed error
	// beforeSync, if set, runs before each pack file is synced: tests
	// hold a sync there.
	beforeSync func(*os.File)
	// beforeWrite, if set, runs as Append has placed a record and not
	// written it yet: tests sync there.
	beforeWrite func()
	// willCreate, if set, is told the id of a pack about to be made, and
	// may refuse it (see SetIDLog).
	willCreate func(id uint32) error

	bufs sync.Pool // *[]byte records are read into
}

func Open(dir string) (*Set, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ids, err := list(dir)
	if err != nil {
		return nil, err
	}
	p := &Set{dir: dir, target: TargetSize, files: map[uint32]*os.File{}, dirty: map[uint32]*os.File{}, nextID: 1}
	p.bufs.New = func() any { b := make([]byte, 0, RecordHeader+chunk.MaxSize+chunk.HeaderLen); return &b }
	if len(ids) > 0 {
		p.nextID = ids[len(ids)-1] + 1
	}
	return p, nil
}

// list returns the ids of the pack files in dir, ascending.
func list(dir string) ([]uint32, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 16, 32)
		if err != nil {
			continue
		}
		ids = append(ids, uint32(id))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

func (p *Set) Path(id uint32) string {
	return filepath.Join(p.dir, fmt.Sprintf("%08x%s", id, suffix))
}

// append writes one record and returns its location. Each store session
// appends to new packs only, so a record torn by a crash is never followed
// by a record that is in use.
func (p *Set) Append(h chunk.Hash, value []byte) (Loc, error) {
	n := int64(RecordHeader + len(value))
	p.mu.Lock()
	if p.cur == nil || (p.curSize > 0 && p.curSize+n > p.target) {
		id := p.nextID
		if p.willCreate != nil {
			if err := p.willCreate(id); err != nil {
				p.mu.Unlock()
				return Loc{}, fmt.Errorf("create pack: %w", err)
			}
		}
		f, err := os.OpenFile(p.Path(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			p.mu.Unlock()
			return Loc{}, fmt.Errorf("create pack: %w", err)
		}
		p.nextID++
		p.created = true
		p.cur, p.curID, p.curSize = f, id, 0
		p.files[id] = f
	}
	f, loc := p.cur, Loc{Pack: p.curID, Offset: p.curSize, Len: uint32(len(value))}
	p.curSize += n
	p.mu.Unlock()

	if p.beforeWrite != nil {
		p.beforeWrite()
	}
	var hdr [RecordHeader]byte
	copy(hdr[:], h[:])
	binary.LittleEndian.PutUint32(hdr[32:], uint32(len(value)))
	err := writeAt(f, loc.Offset, hdr[:], value)
	// Dirty once written: a Sync between the placing and the write would
	// take the mark and write back nothing of this record, and the sync
	// its appender makes next would find the pack clean.
	p.mu.Lock()
	p.dirty[loc.Pack] = f
	p.mu.Unlock()
	if err != nil {
		// The range stays a hole no index entry points at; appends after
		// it go to a new pack.
		p.mu.Lock()
		if p.cur == f {
			p.cur = nil
		}
		p.mu.Unlock()
		return Loc{}, fmt.Errorf("write pack %s: %w", f.Name(), err)
	}
	return loc, nil
}

// read calls fn with the value of the record at loc, after checking that
// the record holds chunk h. The value is only valid during fn: its buffer
// is reused, or a cold read would leave a megabyte of garbage per chunk.
func (p *Set) Read(h chunk.Hash, loc Loc, fn func(value []byte) error) error {
	f, err := p.file(loc.Pack)
	if err != nil {
		return err
	}
	buf := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(buf)
	n := RecordHeader + int(loc.Len)
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	rec := (*buf)[:n]
	if _, err := f.ReadAt(rec, loc.Offset); errors.Is(err, io.EOF) {
		// The index names a record the pack does not hold whole: lost in
		// a crash, or the file was cut. It is as damaged as a bad byte.
		return fmt.Errorf("read pack %s at %d: ends early: %w", f.Name(), loc.Offset, chunk.ErrCorrupt)
	} else if err != nil {
		return fmt.Errorf("read pack %s at %d: %w", f.Name(), loc.Offset, err)
	}
	if chunk.Hash(rec[:32]) != h || binary.LittleEndian.Uint32(rec[32:]) != loc.Len {
		return fmt.Errorf("pack %s at %d holds another record: %w", f.Name(), loc.Offset, chunk.ErrCorrupt)
	}
	return fn(rec[RecordHeader:])
}

func (p *Set) file(id uint32) (*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.files[id]; ok {
		return f, nil
	}
	f, err := os.Open(p.Path(id))
	if errors.Is(err, os.ErrNotExist) {
		// The index names a pack that is not there: lost in a crash
		// before its name was durable. Its records are as damaged as a
		// bad byte (evictions and reclaim drop the index entries first).
		return nil, fmt.Errorf("open pack: %w: %w", err, chunk.ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("open pack: %w", err)
	}
	// Records of one file lie in order: readers (and readahead) go front
	// to back, and a larger kernel readahead keeps the disk busy.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	p.files[id] = f
	return f, nil
}

// Sync makes every record appended so far durable, with the names of the
// pack files that hold them, whoever else syncs meanwhile.
func (p *Set) Sync() error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	p.mu.Lock()
	dirty, created := p.dirty, p.created
	p.dirty, p.created = map[uint32]*os.File{}, false
	p.mu.Unlock()
	var errs []error
	for id, f := range dirty {
		if p.beforeSync != nil {
			p.beforeSync(f)
		}
		if err := durable.File(f); err != nil && !(errors.Is(err, os.ErrClosed) && p.removed(id, f)) {
			errs = append(errs, fmt.Errorf("pack: %w", err))
		}
	}
	if created {
		if err := durable.Dir(p.dir); err != nil {
			errs = append(errs, fmt.Errorf("pack: %w", err))
		}
	}
	if p.failed == nil {
		p.failed = errors.Join(errs...)
	}
	if p.failed != nil {
		p.Seal() // appends go to a pack whose writeback has not failed
	}
	return p.failed
}

// removed reports whether pack id, open as f, was removed: an eviction or
// a reclaim pass that closes it while a Sync writes it back leaves nothing
// that needs the writeback.
func (p *Set) removed(id uint32, f *os.File) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.files[id] != f
}

// seal makes the next append start a new pack.
func (p *Set) Seal() {
	p.mu.Lock()
	p.cur = nil
	p.mu.Unlock()
}

// remove deletes a pack file that holds no live record.
func (p *Set) Remove(id uint32) error {
	p.mu.Lock()
	if f, ok := p.files[id]; ok {
		f.Close()
		delete(p.files, id)
		delete(p.dirty, id)
	}
	p.mu.Unlock()
	if err := os.Remove(p.Path(id)); err != nil {
		return fmt.Errorf("remove pack: %w", err)
	}
	return nil
}

// close syncs and closes every pack.
func (p *Set) Close() error {
	err := p.Sync()
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, f := range p.files {
		f.Close()
		delete(p.files, id)
	}
	p.cur = nil
	return err
}

// SetIDLog makes every id the Set gives a new pack at least next, and
// tells record the id of each pack before it is made, so that the caller
// can keep it where a crash cannot lose it before the index entries that
// name the pack: a pack whose file a crash lost must not have its id
// given to another, or those entries would name the other's records.
func (p *Set) SetIDLog(next uint32, record func(id uint32) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID = max(p.nextID, next)
	p.willCreate = record
}

// NextID is the id the next pack file made will have: every pack of this
// Set's making has at least this id.
func (p *Set) NextID() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nextID
}

// current is the pack being appended to, if any.
func (p *Set) Current() (uint32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.curID, p.cur != nil
}

// Dir is the folder of the pack files.
func (p *Set) Dir() string { return p.dir }

// List returns the ids of the pack files, ascending.
func (p *Set) List() ([]uint32, error) { return list(p.dir) }

// SetTarget sets the size past which a new pack is started.
func (p *Set) SetTarget(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = n
}

// writeAt writes bufs one after the other at off with pwritev(2): a record's
// header and value in one call, without copying the value (a MiB) into one
// buffer first.
func writeAt(f *os.File, off int64, bufs ...[]byte) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = raw.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			n, err := unix.Pwritev(int(fd), bufs, off)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			if n == 0 {
				werr = io.ErrShortWrite
				return true
			}
			off += int64(n)
			for n > 0 && len(bufs) > 0 { // drop what was written
				k := min(n, len(bufs[0]))
				bufs[0], n = bufs[0][k:], n-k
				if len(bufs[0]) == 0 {
					bufs = bufs[1:]
				}
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}
