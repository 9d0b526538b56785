package cache

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zeebo/blake3"
)

// HotFiles keeps decoded copies of files that were read front to back, so
// that later opens can hand the kernel a plain file to read from (FUSE
// passthrough) at the speed of the local page cache. A copy is written as
// a side effect of the first sequential read, from bytes that were just
// verified, and is fsynced before it is used; copies are named by the
// content they hold, so a changed file never meets an old copy. The oldest
// copies go when the total passes the budget.
type HotFiles struct {
	dir    string
	budget int64
	log    *slog.Logger

	mu       sync.Mutex
	filling  map[string]bool
	unsynced map[string]string // complete copies still being fsynced: key -> path
}

const hotPartial = ".partial"

// OpenHotFiles opens the copies in dir, dropping partial ones a previous
// process left. A budget of 0 keeps no copies.
func OpenHotFiles(dir string, budget int64, log *slog.Logger) (*HotFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hot files: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("hot files: %w", err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), hotPartial) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return &HotFiles{dir: dir, budget: budget, log: log, filling: map[string]bool{}, unsynced: map[string]string{}}, nil
}

// ContentKey names content by its size and chunk list.
func ContentKey(c *Content) string {
	h := blake3.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(c.Size))
	h.Write(b[:])
	for _, ch := range c.Chunks {
		h.Write(ch.Hash[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// DerivedKey names bytes derived from stored content, such as a view file,
// by everything that determines them.
func DerivedKey(parts ...string) string {
	h := blake3.New()
	var b [8]byte
	for _, p := range parts {
		binary.LittleEndian.PutUint64(b[:], uint64(len(p)))
		h.Write(b[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func (h *HotFiles) path(key string) string { return filepath.Join(h.dir, key) }

// Open returns the copy of the content named key, or nil if there is none.
// A copy is used as soon as it is complete, while it is fsynced: the bytes
// are in the page cache, and only a durable copy outlives this process.
func (h *HotFiles) Open(key string) *os.File {
	if h.budget == 0 {
		return nil
	}
	h.mu.Lock()
	p, ok := h.unsynced[key]
	h.mu.Unlock()
	if ok {
		if f, err := os.Open(p); err == nil {
			return f
		}
	}
	f, err := os.Open(h.path(key))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.log.Warn("hot file", "key", key, "err", err)
		}
		return nil
	}
	now := time.Now()
	os.Chtimes(f.Name(), now, now) // recently used: evicted last
	return f
}

// minHotSize is the smallest file worth a copy: below it the FUSE page cache
// is as fast.
const minHotSize = 4 << 20

// StartFill begins a copy of content named key of the given size, or
// returns nil when it is too small or too big for the budget, the disk is
// short of space, or a copy is already being made.
func (h *HotFiles) StartFill(key string, size int64) *HotFill {
	if size < minHotSize || size > h.budget/2 || !h.roomFor(size) {
		return nil
	}
	if _, err := os.Stat(h.path(key)); err == nil {
		return nil // made since the caller looked
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.filling[key] {
		return nil
	}
	f, err := os.CreateTemp(h.dir, key+"-*"+hotPartial)
	if err != nil {
		h.log.Warn("hot file", "key", key, "err", err)
		return nil
	}
	h.filling[key] = true
	return &HotFill{hot: h, key: key, size: size, f: f}
}

// roomFor leaves the store's disk at least a GiB and twice the copy free.
func (h *HotFiles) roomFor(size int64) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(h.dir, &st); err != nil {
		return false
	}
	return int64(st.Bavail)*st.Bsize > 2*size+1<<30
}

// HotFill is a copy being made from the bytes readers get. The kernel's
// readahead sends reads out of order and in parallel, so pieces land where
// they belong and the copy is done once they cover the whole file.
type HotFill struct {
	hot  *HotFiles
	key  string
	size int64

	mu      sync.Mutex
	f       *os.File // nil once finished or abandoned
	covered []span   // sorted, disjoint, not touching
}

type span struct{ lo, hi int64 }

// maxSpans bounds the bookkeeping of a reader that jumps around: past it the
// copy is abandoned.
const maxSpans = 1024

// Write copies bytes read at off. It reports whether the copy still wants
// bytes: false once it is complete or abandoned.
func (c *HotFill) Write(p []byte, off int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return false
	}
	if _, err := c.f.WriteAt(p, off); err != nil {
		c.hot.log.Warn("hot file", "key", c.key, "err", err)
		c.abandon()
		return false
	}
	c.covered = addSpan(c.covered, span{off, off + int64(len(p))})
	switch {
	case len(c.covered) == 1 && c.covered[0] == span{0, c.size}:
		f := c.f
		c.f = nil
		c.hot.mu.Lock()
		c.hot.unsynced[c.key] = f.Name()
		c.hot.mu.Unlock()
		go c.hot.finish(c.key, f) // fsync takes a while; the reader goes on
		return false
	case len(c.covered) > maxSpans:
		c.abandon()
		return false
	}
	return true
}

// addSpan merges s into the sorted, disjoint spans.
func addSpan(spans []span, s span) []span {
	i := sort.Search(len(spans), func(i int) bool { return spans[i].hi >= s.lo })
	j := i
	for j < len(spans) && spans[j].lo <= s.hi {
		s.lo, s.hi = min(s.lo, spans[j].lo), max(s.hi, spans[j].hi)
		j++
	}
	return append(spans[:i], append([]span{s}, spans[j:]...)...)
}

// Finish completes a copy its readers have covered a quarter of or more,
// reading the gaps from src in the background: a loader that maps the file
// touches only the tensors it uses before its first forward pass (45% of
// MiniLM's bytes), and would otherwise never get a copy. A copy read less is
// dropped, so that a look at a header does not cost a decode of the file.
func (c *HotFill) Finish(src io.ReaderAt) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return
	}
	var covered int64
	for _, s := range c.covered {
		covered += s.hi - s.lo
	}
	if covered*4 < c.size {
		c.hot.log.Debug("hot file dropped: too little read", "key", c.key, "read", covered, "size", c.size)
		c.abandon()
		return
	}
	var gaps []span
	pos := int64(0)
	for _, s := range append(c.covered, span{c.size, c.size}) {
		if s.lo > pos {
			gaps = append(gaps, span{pos, s.lo})
		}
		pos = s.hi
	}
	go c.fillGaps(src, gaps)
}

func (c *HotFill) fillGaps(src io.ReaderAt, gaps []span) {
	buf := make([]byte, 1<<20)
	for _, g := range gaps {
		for off := g.lo; off < g.hi; {
			n, err := src.ReadAt(buf[:min(int64(len(buf)), g.hi-off)], off)
			if n == 0 || err != nil && err != io.EOF {
				c.hot.log.Warn("hot file: fill gap", "key", c.key, "err", err)
				c.Abandon()
				return
			}
			if !c.Write(buf[:n], off) {
				return // finished or abandoned
			}
			off += int64(n)
		}
	}
}

// Abandon drops an unfinished copy.
func (c *HotFill) Abandon() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.abandon()
}

func (c *HotFill) abandon() {
	if c.f == nil {
		return
	}
	c.f.Close()
	os.Remove(c.f.Name())
	c.f = nil
	c.hot.done(c.key)
}

// finish makes a complete copy durable and visible, then trims the cache.
func (h *HotFiles) finish(key string, f *os.File) {
	defer h.done(key)
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), h.path(key))
	}
	if err != nil {
		h.log.Warn("hot file", "key", key, "err", err)
		os.Remove(f.Name())
		return
	}
	h.log.Debug("hot file ready", "key", key)
	h.evict()
}

func (h *HotFiles) done(key string) {
	h.mu.Lock()
	delete(h.filling, key)
	delete(h.unsynced, key)
	h.mu.Unlock()
}

// evict removes the least recently used copies beyond the budget. An open
// copy stays readable until its last reader closes it.
func (h *HotFiles) evict() {
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		return
	}
	type copyInfo struct {
		name string
		size int64
		used time.Time
	}
	var copies []copyInfo
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || strings.HasSuffix(e.Name(), hotPartial) {
			continue
		}
		copies = append(copies, copyInfo{e.Name(), info.Size(), info.ModTime()})
		total += info.Size()
	}
	sort.Slice(copies, func(i, j int) bool { return copies[i].used.Before(copies[j].used) })
	for _, c := range copies {
		if total <= h.budget {
			break
		}
		os.Remove(filepath.Join(h.dir, c.name))
		total -= c.size
	}
}
