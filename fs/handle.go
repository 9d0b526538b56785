package fs

import (
	"context"
	"io"
	"sync"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/fs/metrics"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// handle is an open file. A handle that writes joins the file's pending
// content (see pending); reads of a handle open for writing see it, other
// handles read the committed content, as the node holds it.
type handle struct {
	node     *fileNode
	cached   bool // the kernel reads it through the FUSE page cache
	writable bool // opened for writing
	ra       *store.Readahead
	sticky
}

var (
	_ = (fs.FileReader)((*handle)(nil))
	_ = (fs.FileWriter)((*handle)(nil))
	_ = (fs.FileFlusher)((*handle)(nil))
	_ = (fs.FileFsyncer)((*handle)(nil))
	_ = (fs.FileReleaser)((*handle)(nil))
)

// sticky is an open file's error: once a write, truncate or commit of its
// writes failed, every later write, flush and fsync returns it, so a
// retried fsync or the close never reports lost data as saved.
type sticky struct {
	mu  sync.Mutex
	err error
}

func (s *sticky) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *sticky) stickyErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// fsync commits, then makes durable everything written so far; a failure
// of either sticks to s.
func (f *FS) fsync(s *sticky, commit func() error) error {
	if err := commit(); err != nil {
		return err
	}
	if err := f.writes.Sync(); err != nil {
		s.setErr(err)
		return err
	}
	return nil
}

// errno is the answer to op on the file, err logged if it is not one.
func (n *fileNode) errno(op string, err error) syscall.Errno {
	return toErrno(n.fsys.log, op+" "+n.Path(nil), err)
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.writable {
		if p := h.node.lockPending(false); p != nil {
			n, err := p.draft.ReadAt(dest, off)
			if err != nil && err != io.EOF {
				p.fail(err)
			}
			p.mu.Unlock()
			return h.readResult(dest[:n], err)
		}
	}
	_, r := h.node.current()
	n, err := r.ReadAhead(ctx, h.ra, dest, off)
	return h.readResult(dest[:n], err)
}

func (h *handle) readResult(data []byte, err error) (fuse.ReadResult, syscall.Errno) {
	if err != nil && err != io.EOF {
		return nil, h.node.errno("read", err)
	}
	h.node.fsys.metrics.Reads(metrics.AsWritten).Add(float64(len(data)))
	return fuse.ReadResultData(data), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	uid := callerUid(ctx)
	err := h.change(func(p *pending) error { return p.draft.WriteAt(data, off, uid) })
	if err != nil {
		return 0, h.node.errno("write", err)
	}
	h.node.fsys.metrics.Written().Add(float64(len(data)))
	return uint32(len(data)), 0
}

// truncate sets the pending length, for uid.
func (h *handle) truncate(uid uint32, size int64) error {
	if base, _ := h.node.current(); size == base.Size {
		if _, writing := h.node.pendingSize(); !writing {
			return nil
		}
	}
	return h.change(func(p *pending) error { return p.draft.Truncate(size, uid) })
}

// change applies op to the file's pending content as one of its writers;
// a failure fails the pending content for every writer.
func (h *handle) change(op func(p *pending) error) error {
	if err := h.stickyErr(); err != nil {
		return err
	}
	p := h.node.lockPending(true)
	defer p.mu.Unlock()
	p.writers[h] = struct{}{}
	if err := op(p); err != nil {
		p.fail(err)
		return err
	}
	return nil
}

// commit makes the pending content this handle wrote into (with every
// other writer's) the file's content. With others still writing and last
// false, it leaves that to them.
func (h *handle) commit(last bool) error {
	if err := h.stickyErr(); err != nil {
		return err
	}
	p := h.node.lockPending(false)
	if p == nil {
		return nil
	}
	defer p.mu.Unlock()
	if _, mine := p.writers[h]; !mine {
		return nil
	}
	if last && len(p.writers) > 1 {
		delete(p.writers, h)
		return nil
	}
	if err := p.commit(); err != nil {
		p.fail(err) // after commit's finish: only hands out the error
		return err
	}
	return nil
}

func (h *handle) Flush(ctx context.Context) syscall.Errno {
	return h.node.errno("flush", h.commit(false))
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.node.errno("fsync", h.node.fsys.fsync(&h.sticky, func() error { return h.commit(false) }))
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	if err := h.commit(true); err != nil {
		h.node.fsys.log.Error("release: content lost", "file", h.node.Path(nil), "err", err)
	}
	h.node.forget(h)
	return 0
}

// callerUid is the user a request is made for: root when the kernel does
// not say.
func callerUid(ctx context.Context) uint32 {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid
	}
	return 0
}
