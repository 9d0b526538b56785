package fs

import (
	"context"
	"io"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// hotHandle is a read-only open of a file whose content has a hot copy: the
// kernel reads the copy itself (FUSE passthrough), at the speed of the local
// page cache. It is a type of its own because writers must never get a
// backing file.
//
// The kernel holds one backing file per inode and, while any open uses it,
// fails (EIO) every open of the inode that does not use it, and any open in
// passthrough mode while the inode has opens that use the FUSE page cache.
// So fileNode counts both kinds: a hot open is handed out only when no
// caching open exists, and while hot opens exist the content cannot change
// (opens for writing and truncates get ETXTBSY) and every other open shares
// the same copy.
type hotHandle struct {
	node *fileNode
}

var (
	_ = (fs.FilePassthroughFder)((*hotHandle)(nil))
	_ = (fs.FileReader)((*hotHandle)(nil))
	_ = (fs.FileFsyncer)((*hotHandle)(nil))
	_ = (fs.FileReleaser)((*hotHandle)(nil))
)

func (h *hotHandle) PassthroughFd() (int, bool) { return int(h.node.hotFile.Fd()), true }

// Read serves the copy when the kernel could not take the file over
// (passthrough needs CAP_SYS_ADMIN and kernel 6.9).
func (h *hotHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.node.hotFile.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, toErrno(h.node.fsys.log, "read hot copy of "+h.node.Path(nil), err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *hotHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return 0 }

func (h *hotHandle) Release(ctx context.Context) syscall.Errno {
	h.node.mu.Lock()
	defer h.node.mu.Unlock()
	if h.node.hotOpen--; h.node.hotOpen == 0 {
		h.node.hotFile.Close()
		h.node.hotFile = nil
	}
	return 0
}

// openHot returns a hot handle if the committed content has a hot copy and
// the kernel can read this inode in passthrough mode now.
func (n *fileNode) openHot() *hotHandle {
	hot := n.fsys.hot
	if hot == nil {
		return nil
	}
	n.mu.Lock()
	content := n.content
	switch {
	case n.hotOpen > 0: // the content has not changed since
		n.hotOpen++
		n.mu.Unlock()
		return &hotHandle{node: n}
	case n.cachedOpen > 0:
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()
	f := hot.Open(cache.ContentKey(content))
	if f == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.hotOpen > 0: // another open got there first
		f.Close()
	case n.cachedOpen > 0 || n.content != content:
		f.Close()
		return nil
	default:
		n.hotFile = f
		n.fsys.log.Debug("open from hot copy", "file", n.Path(nil), "copy", f.Name())
	}
	n.hotOpen++
	return &hotHandle{node: n}
}

// waitHotClosed waits a little for the hot opens of n to go: the kernel
// sends the release of a closed file after close(2) returns, so a write
// right after a read could otherwise find the read still open. It reports
// whether they went. Called with n.mu held.
func (n *fileNode) waitHotClosed() bool {
	for i := 0; n.hotOpen > 0 && i < 100; i++ {
		n.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		n.mu.Lock()
	}
	return n.hotOpen == 0
}

// startFill begins a hot copy of the committed content, made from what the
// caching opens read. Called with n.mu held.
func (n *fileNode) startFill() {
	if n.fsys.hot == nil || n.fill != nil {
		return
	}
	n.fill = n.fsys.hot.StartFill(cache.ContentKey(n.content), n.content.Size)
	n.fillContent = n.content
}

// fillFor is the hot copy being made of content, if any.
func (n *fileNode) fillFor(content *cache.Content) *cache.HotFill {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fill == nil || n.fillContent != content {
		return nil
	}
	return n.fill
}

// dropFill abandons an unfinished copy. Called with n.mu held.
func (n *fileNode) dropFill() {
	if n.fill != nil {
		n.fill.Abandon()
		n.fill, n.fillContent = nil, nil
	}
}
