package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/ckptfs/ckptfs/cache/chunk"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
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
	packRecordHeader = 32 + 4
	packTargetSize   = 256 << 20
	packSuffix       = ".pack"
)

// packLoc is where a chunk's record is: the Badger value of its chunk key.
type packLoc struct {
	Pack   uint32
	Offset int64  // of the record
	Len    uint32 // of the value, without the record header
}

const packLocLen = 4 + 8 + 4

func (l packLoc) encode() []byte {
	b := make([]byte, packLocLen)
	binary.LittleEndian.PutUint32(b, l.Pack)
	binary.LittleEndian.PutUint64(b[4:], uint64(l.Offset))
	binary.LittleEndian.PutUint32(b[12:], l.Len)
	return b
}

func decodePackLoc(b []byte) (packLoc, error) {
	if len(b) != packLocLen {
		return packLoc{}, fmt.Errorf("chunk location of %d bytes: %w", len(b), chunk.ErrCorrupt)
	}
	return packLoc{
		Pack:   binary.LittleEndian.Uint32(b),
		Offset: int64(binary.LittleEndian.Uint64(b[4:])),
		Len:    binary.LittleEndian.Uint32(b[12:]),
	}, nil
}

// packs is the set of pack files of a store. Appends reserve their range
// under the lock and write outside it, so the ingest workers write in
// parallel.
type packs struct {
	dir    string
	target int64 // a new pack is started past this size

	mu      sync.Mutex
	files   map[uint32]*os.File // opened on first use
	cur     *os.File            // pack being appended to; nil until the first write
	curID   uint32
	curSize int64
	nextID  uint32
	dirty   map[uint32]*os.File // written since the last sync

	bufs sync.Pool // *[]byte records are read into
}

func openPacks(dir string) (*packs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ids, err := listPacks(dir)
	if err != nil {
		return nil, err
	}
	p := &packs{dir: dir, target: packTargetSize, files: map[uint32]*os.File{}, dirty: map[uint32]*os.File{}, nextID: 1}
	p.bufs.New = func() any { b := make([]byte, 0, packRecordHeader+chunk.MaxSize+chunk.HeaderLen); return &b }
	if len(ids) > 0 {
		p.nextID = ids[len(ids)-1] + 1
	}
	return p, nil
}

// listPacks returns the ids of the pack files in dir, ascending.
func listPacks(dir string) ([]uint32, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), packSuffix)
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

func (p *packs) path(id uint32) string {
	return filepath.Join(p.dir, fmt.Sprintf("%08x%s", id, packSuffix))
}

// append writes one record and returns its location. Each store session
// appends to new packs only, so a record torn by a crash is never followed
// by a record that is in use.
func (p *packs) append(h chunk.Hash, value []byte) (packLoc, error) {
	n := int64(packRecordHeader + len(value))
	p.mu.Lock()
	if p.cur == nil || (p.curSize > 0 && p.curSize+n > p.target) {
		id := p.nextID
		f, err := os.OpenFile(p.path(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			p.mu.Unlock()
			return packLoc{}, fmt.Errorf("create pack: %w", err)
		}
		p.nextID++
		p.cur, p.curID, p.curSize = f, id, 0
		p.files[id] = f
	}
	f, loc := p.cur, packLoc{Pack: p.curID, Offset: p.curSize, Len: uint32(len(value))}
	p.curSize += n
	p.dirty[loc.Pack] = f
	p.mu.Unlock()

	rec := make([]byte, packRecordHeader, n)
	copy(rec, h[:])
	binary.LittleEndian.PutUint32(rec[32:], uint32(len(value)))
	rec = append(rec, value...)
	if _, err := f.WriteAt(rec, loc.Offset); err != nil {
		// The range stays a hole no index entry points at; appends after
		// it go to a new pack.
		p.mu.Lock()
		if p.cur == f {
			p.cur = nil
		}
		p.mu.Unlock()
		return packLoc{}, fmt.Errorf("write pack %s: %w", f.Name(), err)
	}
	return loc, nil
}

// read calls fn with the value of the record at loc, after checking that
// the record holds chunk h. The value is only valid during fn: its buffer
// is reused, or a cold read would leave a megabyte of garbage per chunk.
func (p *packs) read(h chunk.Hash, loc packLoc, fn func(value []byte) error) error {
	f, err := p.file(loc.Pack)
	if err != nil {
		return err
	}
	buf := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(buf)
	n := packRecordHeader + int(loc.Len)
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	rec := (*buf)[:n]
	if _, err := f.ReadAt(rec, loc.Offset); err != nil {
		return fmt.Errorf("read pack %s at %d: %w", f.Name(), loc.Offset, err)
	}
	if chunk.Hash(rec[:32]) != h || binary.LittleEndian.Uint32(rec[32:]) != loc.Len {
		return fmt.Errorf("pack %s at %d holds another record: %w", f.Name(), loc.Offset, chunk.ErrCorrupt)
	}
	return fn(rec[packRecordHeader:])
}

func (p *packs) file(id uint32) (*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.files[id]; ok {
		return f, nil
	}
	f, err := os.Open(p.path(id))
	if err != nil {
		return nil, fmt.Errorf("open pack: %w", err)
	}
	p.files[id] = f
	return f, nil
}

// sync makes every record appended so far durable.
func (p *packs) sync() error {
	p.mu.Lock()
	dirty := p.dirty
	p.dirty = map[uint32]*os.File{}
	p.mu.Unlock()
	var errs []error
	for _, f := range dirty {
		if err := f.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("sync pack %s: %w", f.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// seal makes the next append start a new pack.
func (p *packs) seal() {
	p.mu.Lock()
	p.cur = nil
	p.mu.Unlock()
}

// remove deletes a pack file that holds no live record.
func (p *packs) remove(id uint32) error {
	p.mu.Lock()
	if f, ok := p.files[id]; ok {
		f.Close()
		delete(p.files, id)
		delete(p.dirty, id)
	}
	p.mu.Unlock()
	if err := os.Remove(p.path(id)); err != nil {
		return fmt.Errorf("remove pack: %w", err)
	}
	return nil
}

// close syncs and closes every pack.
func (p *packs) close() error {
	err := p.sync()
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, f := range p.files {
		f.Close()
		delete(p.files, id)
	}
	p.cur = nil
	return err
}

// current is the pack being appended to, if any.
func (p *packs) current() (uint32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.curID, p.cur != nil
}
