// Package hot keeps decoded copies of files read often, for FUSE
// passthrough.
package hot

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

// Files keeps decoded copies of files opened again and again, so that
// later opens can hand the kernel a plain file to read from (FUSE
// passthrough) at the speed of the local page cache. A copy is made in the
// background from verified chunks, used as soon as it is complete, and
// fsynced before it is renamed into place, the only form that outlives the
// process. Copies are named by the content they hold, so a changed file never
// meets an old copy; the least recently used go when the total passes the
// budget.
type Files struct {
	dir    string
	budget int64
	log    *slog.Logger

	mu       sync.Mutex
	copying  map[string]bool
	unsynced map[string]string // complete copies still being fsynced: key -> path
}

const hotPartial = ".partial"

// Open opens the copies in dir, dropping partial ones a previous
// process left. A budget of 0 keeps no copies.
func Open(dir string, budget int64, log *slog.Logger) (*Files, error) {
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
	return &Files{dir: dir, budget: budget, log: log, copying: map[string]bool{}, unsynced: map[string]string{}}, nil
}

// Usage is the disk the complete copies in dir take, as Open would find
// them: 0 if there are none.
func Usage(dir string) (int64, error) {
	_, total, err := complete(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("hot files: %w", err)
	}
	return total, nil
}

// copyInfo is one complete copy on disk.
type copyInfo struct {
	name string
	size int64
	used time.Time
}

// complete lists the complete copies in dir (not the partial ones being
// made) and the bytes they take.
func complete(dir string) ([]copyInfo, int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	var copies []copyInfo
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || strings.HasSuffix(e.Name(), hotPartial) {
			continue
		}
		copies = append(copies, copyInfo{e.Name(), info.Size(), info.ModTime()})
		total += info.Size()
	}
	return copies, total, nil
}

// Key names bytes derived from stored content, such as a view file, by
// everything that determines them.
func Key(parts ...string) string {
	return KeyFrom(func(h *blake3.Hasher) {
		for _, p := range parts {
			h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(p))))
			h.Write([]byte(p))
		}
	})
}

// KeyFrom is the first 16 bytes, in hex, of the BLAKE3 of what write
// hashes: how copies are named.
func KeyFrom(write func(h *blake3.Hasher)) string {
	h := blake3.New()
	write(h)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func (h *Files) path(key string) string { return filepath.Join(h.dir, key) }

// Open returns the copy of the content named key, or nil if there is none.
// A copy is used as soon as it is complete, while it is fsynced: the bytes
// are in the page cache, and only a durable copy outlives this process.
func (h *Files) Open(key string) *os.File {
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

// Copy makes, in the background, a copy of the size bytes of src under key,
// unless the file is too small to gain or too big for the budget, the disk
// is short of space, or the copy exists or is being made.
func (h *Files) Copy(key string, size int64, src io.ReaderAt) {
	if size < minHotSize || size > h.budget/2 || !h.roomFor(size) {
		return
	}
	if _, err := os.Stat(h.path(key)); err == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.copying[key] {
		return
	}
	h.copying[key] = true
	go h.copy(key, size, src)
}

// roomFor leaves the store's disk at least a GiB and twice the copy free.
func (h *Files) roomFor(size int64) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(h.dir, &st); err != nil {
		return false
	}
	return int64(st.Bavail)*st.Bsize > 2*size+1<<30
}

func (h *Files) copy(key string, size int64, src io.ReaderAt) {
	f, err := os.CreateTemp(h.dir, key+"-*"+hotPartial)
	if err == nil {
		var n int64
		n, err = io.CopyBuffer(f, io.NewSectionReader(src, 0, size), make([]byte, 1<<20))
		if err == nil && n != size { // the source ended early: no copy rather than a short one
			err = fmt.Errorf("source ended at %d of %d bytes", n, size)
		}
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	if err != nil {
		h.log.Warn("hot copy", "key", key, "err", err)
		h.done(key)
		return
	}
	h.mu.Lock()
	h.unsynced[key] = f.Name()
	h.mu.Unlock()
	h.finish(key, f)
}

// finish makes a complete copy durable and visible, then trims the cache.
func (h *Files) finish(key string, f *os.File) {
	defer h.done(key)
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), h.path(key))
	}
	if err != nil {
		h.log.Warn("hot copy", "key", key, "err", err)
		os.Remove(f.Name())
		return
	}
	h.log.Debug("hot copy ready", "key", key)
	h.evict()
}

func (h *Files) done(key string) {
	h.mu.Lock()
	delete(h.copying, key)
	delete(h.unsynced, key)
	h.mu.Unlock()
}

// evict removes the least recently used copies beyond the budget. An open
// copy stays readable until its last reader closes it.
func (h *Files) evict() {
	h.dropOldest(func(total, _ int64) bool { return total <= h.budget })
}

// Drop removes the least recently used copies until need bytes are freed,
// or none is left, and returns the bytes freed: the store's disk comes
// before the copies.
func (h *Files) Drop(need int64) int64 {
	freed := h.dropOldest(func(_, freed int64) bool { return freed >= need })
	if freed > 0 {
		h.log.Warn("hot copies dropped: the store's disk is short of space", "bytes", freed)
	}
	return freed
}

// dropOldest removes copies, least recently used first, until enough says
// the total left and the bytes freed are enough; it returns the bytes
// freed.
func (h *Files) dropOldest(enough func(total, freed int64) bool) int64 {
	copies, total, err := complete(h.dir)
	if err != nil {
		return 0
	}
	sort.Slice(copies, func(i, j int) bool { return copies[i].used.Before(copies[j].used) })
	var freed int64
	for _, c := range copies {
		if enough(total, freed) {
			break
		}
		if os.Remove(filepath.Join(h.dir, c.name)) == nil {
			total -= c.size
			freed += c.size
		}
	}
	return freed
}
