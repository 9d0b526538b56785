package fs

import (
	"context"
	"io"
	"sync"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/writes"
	"github.com/ckptfs/ckptfs/fs/metrics"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Writes and reads the kernel makes itself. A file root creates, or opens
// write-only when it is empty or with O_TRUNC, while nothing else has it
// open, gets a backing file (writes.Backed) that the kernel reads and
// writes without the daemon (FUSE passthrough): a save writes at the speed
// of the local disk, with no round trip per write. A file whose content is
// still staged (saved a moment ago, not chunked yet) that root opens
// read-only while nothing else has it open gets its staged file as backing
// file: the checkpoint saved last, the one loaded next, is read at the
// disk's speed. The kernel then requires every open of the inode to use
// that same backing file, so every open until the last is released joins
// it: they see each other's writes at once, as on a local disk. Flush,
// fsync and release still come to the daemon, which commits what the
// backing file holds; a truncate and a utimens come too.
//
// A backing file's writes are checked by the disk only, no space guard
// (see writes.Path.ensureSpace): other users' opens start none, and their
// opens for writing do not join one (ETXTBSY).

// backedOpens is the backing of a file while the kernel holds it.
type backedOpens struct {
	fd int // b's backing file, for the kernel: fixed, read without mu

	mu     sync.Mutex // serializes b's operations
	b      *writes.Backed
	closed bool // b is closed: the last open was released
	// opens counts the kernel's opens, guarded by the node's mu.
	opens int
}

// openBacked opens the node, at path, on its backing file: joining the one
// the kernel holds, or starting one (see above). It returns nil when the
// open takes the daemon's path.
func (n *fileNode) openBacked(ctx context.Context, path string, flags uint32) (*backedHandle, error) {
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	n.mu.Lock()
	defer n.mu.Unlock()
	root := callerUid(ctx) == 0
	if bo := n.backed; bo != nil {
		if writable && !root { // its writes would pass no space guard (see above)
			n.fsys.log.Warn("open for writing refused: the file is open on its backing file, written by root only", "file", path, "uid", callerUid(ctx))
			return nil, syscall.ETXTBSY
		}
		bo.opens++
		return &backedHandle{node: n, bo: bo, writable: writable}, nil
	}
	if !root || !n.fsys.passthrough.Load() || n.handles > 0 || n.hot.Hot() || n.pending != nil ||
		!n.fsys.writes.CanBack() {
		return nil, nil
	}
	var b *writes.Backed
	switch {
	case flags&syscall.O_ACCMODE == syscall.O_WRONLY && (n.content.Size == 0 || flags&syscall.O_TRUNC != 0):
		// Write-only: no writable mapping outlives its close unseen.
		var err error
		if b, err = n.fsys.writes.NewBacked(n.ino, path); err != nil {
			return nil, err
		}
	case !writable && n.content.Staged != 0:
		// Saved a moment ago: read on its staged file.
		var ok bool
		if b, ok = n.fsys.writes.BackStaged(n.ino, path, n.content); !ok {
			return nil, nil
		}
	default:
		return nil, nil
	}
	n.backed = &backedOpens{fd: b.Fd(), b: b, opens: 1}
	return &backedHandle{node: n, bo: n.backed, writable: writable}, nil
}

// backedSize is the length of the node's backing file, if it has one.
func (n *fileNode) backedSize() (int64, bool) {
	n.mu.Lock()
	bo := n.backed
	n.mu.Unlock()
	if bo == nil {
		return 0, false
	}
	bo.mu.Lock()
	defer bo.mu.Unlock()
	if bo.closed {
		return 0, false
	}
	size, err := bo.b.Size()
	return size, err == nil
}

// backedSetattr applies a truncate and a utimens to the node's backing
// file, if it has one, and reports whether it had. A setattr right after
// the last close (cp -p, tar: the release reaches the daemon after close
// returns) may find it closed meanwhile: the daemon's path takes it.
func (n *fileNode) backedSetattr(in *fuse.SetAttrIn) (bool, error) {
	n.mu.Lock()
	bo := n.backed
	n.mu.Unlock()
	if bo == nil {
		return false, nil
	}
	bo.mu.Lock()
	defer bo.mu.Unlock()
	if bo.closed {
		return false, nil
	}
	if size, ok := in.GetSize(); ok {
		// A truncate changes the content as a write does, but comes from
		// any open, or none: it is committed here.
		unlinked := n.unlinked.Load()
		if err := bo.b.Truncate(context.Background(), int64(size), unlinked); err != nil {
			return true, err
		}
		c, r, err := bo.b.Commit(context.Background(), unlinked)
		if err != nil {
			return true, err
		}
		n.contentChanged(c, r)
	}
	if mt, ok := in.GetMTime(); ok {
		if err := bo.b.SetMtime(mt.UnixNano()); err != nil {
			return true, err
		}
	}
	return true, nil
}

// backedHandle is an open of a file on its backing file. The kernel reads
// and writes the backing file itself; Read and Write serve it only where
// the kernel could not take it over.
type backedHandle struct {
	node     *fileNode
	bo       *backedOpens
	writable bool
	sticky
}

var (
	_ = (fs.FilePassthroughFder)((*backedHandle)(nil))
	_ = (fs.FileReader)((*backedHandle)(nil))
	_ = (fs.FileWriter)((*backedHandle)(nil))
	_ = (fs.FileFlusher)((*backedHandle)(nil))
	_ = (fs.FileFsyncer)((*backedHandle)(nil))
	_ = (fs.FileReleaser)((*backedHandle)(nil))
)

// PassthroughFd is asked for the first open of the inode only; later ones
// share what it returned.
func (h *backedHandle) PassthroughFd() (int, bool) { return h.bo.fd, true }

func (h *backedHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.bo.mu.Lock()
	n, err := h.bo.b.ReadAt(dest, off)
	h.bo.mu.Unlock()
	if err != nil && err != io.EOF {
		return nil, h.node.errno("read", err)
	}
	h.node.fsys.metrics.Reads(metrics.AsWritten).Add(float64(n))
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *backedHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if err := h.stickyErr(); err != nil {
		return 0, h.node.errno("write", err)
	}
	h.bo.mu.Lock()
	err := h.bo.b.WriteAt(data, off, callerUid(ctx))
	h.bo.mu.Unlock()
	if err != nil {
		h.setErr(err)
		return 0, h.node.errno("write", err)
	}
	h.node.fsys.metrics.Written().Add(float64(len(data)))
	return uint32(len(data)), 0
}

// commit records what the backing file holds, if this open may write.
func (h *backedHandle) commit() error {
	if err := h.stickyErr(); err != nil || !h.writable {
		return err
	}
	h.bo.mu.Lock()
	defer h.bo.mu.Unlock()
	if h.bo.closed {
		return nil
	}
	before := h.bo.b.CommittedSize()
	c, r, err := h.bo.b.Commit(context.Background(), h.node.unlinked.Load())
	if err != nil {
		h.setErr(err)
		return err
	}
	h.node.contentChanged(c, r)
	// The daemon sees none of the kernel's writes: what the file grew by
	// stands for them in the written bytes.
	h.node.fsys.metrics.Written().Add(float64(max(c.Size-before, 0)))
	return nil
}

func (h *backedHandle) Flush(ctx context.Context) syscall.Errno {
	return h.node.errno("flush", h.commit())
}

func (h *backedHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.node.errno("fsync", h.node.fsys.fsync(&h.sticky, h.commit))
}

// Release commits a writer's bytes; the last open's release ends the
// backing, and the file's next open takes the daemon's path or a new
// backing file.
func (h *backedHandle) Release(ctx context.Context) syscall.Errno {
	if err := h.commit(); err != nil {
		h.node.fsys.log.Error("release: content lost", "file", h.node.Path(nil), "err", err)
	}
	n := h.node
	n.mu.Lock()
	h.bo.opens--
	last := h.bo.opens == 0
	if last {
		n.backed = nil
	}
	n.mu.Unlock()
	if last {
		h.bo.mu.Lock()
		h.bo.b.Close(n.unlinked.Load())
		h.bo.closed = true
		h.bo.mu.Unlock()
	}
	return 0
}
