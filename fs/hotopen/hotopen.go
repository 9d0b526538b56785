// Package hotopen hands the kernel the hot copy of a file (cache/hot) to
// read itself (FUSE passthrough), and counts a file's opens to know when it
// may.
package hotopen

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/hot"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Opens is the hot-copy state of one inode: its kernel opens by kind,
// and the copy the passthrough ones read. The second open through the page
// cache starts a copy in the background; opens after it is made read it.
//
// The kernel holds one backing file per inode and, while any open uses it,
// fails (EIO) every open of the inode that does not use it, and any open in
// passthrough mode while the inode has opens that use the FUSE page cache.
// So a hot open is handed out only when no caching open exists, and while
// hot opens exist every other open shares the same copy and the content
// cannot change (opens for writing and truncates get ETXTBSY).
//
// Every field is guarded by mu, the owning node's lock (see Guard).
type Opens struct {
	mu     *sync.Mutex
	Cached int      // kernel opens that use the FUSE page cache, counted by the node
	hot    int      // kernel opens in passthrough mode
	file   *os.File // the copy the hot opens read
	opens  int      // read-only opens through the page cache so far
}

// Guard makes mu, the owning node's lock, the lock of o.
func (o *Opens) Guard(mu *sync.Mutex) { o.mu = mu }

// Hot reports whether the kernel reads the inode from its copy now. Called
// with mu held.
func (o *Opens) Hot() bool { return o.hot > 0 }

// Open returns a hot handle if the copy named key exists and the kernel can
// read the inode in passthrough mode now. current tells whether the content
// named key is still the node's; it is called with mu held.
func (o *Opens) Open(hot *hot.Files, key string, current func() bool, name string, log *slog.Logger) *Handle {
	if hot == nil || key == NoCopy {
		return nil
	}
	h := &Handle{o: o, name: name, log: log}
	o.mu.Lock()
	switch {
	case o.hot > 0: // the content cannot have changed since
		o.hot++
		o.mu.Unlock()
		return h
	case o.Cached > 0:
		o.mu.Unlock()
		return nil
	}
	o.mu.Unlock()
	f := hot.Open(key)
	if f == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.hot > 0: // another open got there first
		f.Close()
	case o.Cached > 0 || !current():
		f.Close()
		return nil
	default:
		o.file = f
		log.Debug("open from hot copy", "file", name, "copy", f.Name())
	}
	o.hot++
	return h
}

// WaitClosed waits a little for the hot opens to go: the kernel sends the
// release of a closed file after close(2) returns, so a write right after
// a read could otherwise find the read still open. It reports whether they
// went. Called with mu held.
func (o *Opens) WaitClosed() bool {
	for i := 0; o.hot > 0 && i < 100; i++ {
		o.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		o.mu.Lock()
	}
	return o.hot == 0
}

// CountOpen counts a read-only open through the page cache; from the
// second, a copy of the size bytes of src is made under key. A file read
// once is not worth a copy, and the copy of one read again is made while
// the page cache serves it. Called with mu held.
func (o *Opens) CountOpen(hot *hot.Files, key string, size int64, src io.ReaderAt) {
	if o.opens++; o.opens >= 2 && hot != nil && key != NoCopy {
		hot.Copy(key, size, src)
	}
}

// NoCopy is the key of content that gets no hot copy: staged content,
// which a file on its backing file changes in place under one key.
const NoCopy = ""

// Handle is a read-only open served from a hot copy: the kernel reads
// the copy itself (FUSE passthrough), at the speed of the local page cache.
// It is a type of its own because writers must never get a backing file.
type Handle struct {
	o    *Opens
	name string
	log  *slog.Logger
}

var (
	_ = (fs.FilePassthroughFder)((*Handle)(nil))
	_ = (fs.FileReader)((*Handle)(nil))
	_ = (fs.FileFsyncer)((*Handle)(nil))
	_ = (fs.FileReleaser)((*Handle)(nil))
)

// PassthroughFd is called once per open, while the open is counted, so
// the copy is open.
func (h *Handle) PassthroughFd() (int, bool) {
	h.o.mu.Lock()
	defer h.o.mu.Unlock()
	return int(h.o.file.Fd()), true
}

// Read serves the copy when the kernel could not take the file over
// (passthrough needs CAP_SYS_ADMIN and kernel 6.9).
func (h *Handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.o.mu.Lock()
	f := h.o.file
	h.o.mu.Unlock()
	n, err := f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		h.log.Error("read hot copy", "file", h.name, "err", err)
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *Handle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return 0 }

func (h *Handle) Release(ctx context.Context) syscall.Errno {
	h.o.mu.Lock()
	defer h.o.mu.Unlock()
	if h.o.hot--; h.o.hot == 0 {
		h.o.file.Close()
		h.o.file = nil
	}
	return 0
}
