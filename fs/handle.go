package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/ckptfs/ckptfs/cache"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// handle is an open file. A clean handle reads the file's committed
// content, as its node holds it. The first write or truncate makes it dirty,
// starting from that content: writes in order from an empty file stream
// straight into ingest; anything else (an out-of-order write, a truncate, a
// read of pending data) moves the pending content to a staging file. A
// commit ingests the pending content and swaps the file's manifest in one
// transaction, so readers never see half a file.
type handle struct {
	node   *fileNode
	cached bool // the kernel reads it through the FUSE page cache

	mu     sync.Mutex
	dirty  bool
	stream *cache.Writer // pending content, written in order
	staged *os.File      // pending content, written at random
	size   int64         // pending length
}

var (
	_ = (fs.FileReader)((*handle)(nil))
	_ = (fs.FileWriter)((*handle)(nil))
	_ = (fs.FileFlusher)((*handle)(nil))
	_ = (fs.FileFsyncer)((*handle)(nil))
	_ = (fs.FileReleaser)((*handle)(nil))
)

func (h *handle) store() *cache.Store { return h.node.fsys.store }

func (h *handle) errno(op string, err error) syscall.Errno {
	return toErrno(h.node.fsys.log, fmt.Sprintf("%s %s", op, h.node.Path(nil)), err)
}

func (h *handle) pendingSize() (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.size, h.dirty
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	if h.dirty {
		defer h.mu.Unlock()
		if err := h.toStaging(); err != nil {
			return nil, h.errno("read", err)
		}
		n, err := h.staged.ReadAt(dest[:max(min(int64(len(dest)), h.size-off), 0)], off)
		return h.readResult(dest[:n], err)
	}
	h.mu.Unlock()
	_, r := h.node.current()
	n, err := r.ReadAt(dest, off)
	return h.readResult(dest[:n], err)
}

func (h *handle) readResult(data []byte, err error) (fuse.ReadResult, syscall.Errno) {
	if err != nil && err != io.EOF {
		return nil, h.errno("read", err)
	}
	h.node.fsys.metrics.reads(kindAsWritten).Add(float64(len(data)))
	return fuse.ReadResultData(data), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dirty {
		base, _ := h.node.current()
		h.dirty, h.size = true, base.Size
		if base.Size == 0 && off == 0 {
			h.stream = h.store().NewWriter()
		}
	}
	if h.stream == nil || off != h.stream.Len() {
		if err := h.toStaging(); err != nil {
			return 0, h.errno("write", err)
		}
	}
	var err error
	if h.stream != nil {
		_, err = h.stream.Write(data)
	} else {
		_, err = h.staged.WriteAt(data, off)
	}
	if err != nil {
		return 0, h.errno("write", err)
	}
	h.size = max(h.size, off+int64(len(data)))
	h.node.fsys.metrics.writtenBytes.Add(float64(len(data)))
	return uint32(len(data)), 0
}

// toStaging moves pending content into a staging file, which takes writes
// and reads at any offset. Called with h.mu held and h.dirty set.
func (h *handle) toStaging() error {
	if h.staged != nil {
		return nil
	}
	content, _ := h.node.current()
	if h.stream != nil {
		c, err := h.stream.Close()
		h.stream = nil
		if err != nil {
			return err
		}
		content = c
	}
	f, err := os.CreateTemp(h.store().StagingDir(), "write-*")
	if err != nil {
		return fmt.Errorf("staging file: %w", err)
	}
	r := h.store().NewReader(h.node.Path(nil), content)
	if _, err := io.Copy(f, io.NewSectionReader(r, 0, r.Size())); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("staging file: %w", err)
	}
	h.staged = f
	return nil
}

// truncate sets the pending length.
func (h *handle) truncate(size int64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if base, _ := h.node.current(); !h.dirty && size == base.Size {
		return nil
	}
	if h.dirty && h.stream != nil && size == h.stream.Len() {
		return nil
	}
	h.dirty = true
	if size == 0 {
		h.discardPending()
		h.stream, h.size = h.store().NewWriter(), 0
		return nil
	}
	if err := h.toStaging(); err != nil {
		return err
	}
	if err := h.staged.Truncate(size); err != nil {
		return err
	}
	h.size = size
	return nil
}

// discardPending drops the stream or staging file. Called with h.mu held.
func (h *handle) discardPending() {
	if h.stream != nil {
		h.stream.Abort()
		h.stream = nil
	}
	if h.staged != nil {
		h.staged.Close()
		os.Remove(h.staged.Name())
		h.staged = nil
	}
}

// commit stores pending content and makes it the file's content.
func (h *handle) commit() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dirty {
		return nil
	}
	var c *cache.Content
	var err error
	if h.stream != nil {
		c, err = h.stream.Close()
		h.stream = nil
	} else {
		c, err = h.store().Ingest(io.NewSectionReader(h.staged, 0, h.size))
	}
	h.discardPending()
	h.dirty = false
	if err != nil {
		return err
	}
	_, err = h.store().Update(h.node.ino, func(in *cache.Inode) error {
		in.Content = *c
		in.Mtime, in.Ctime = now(), now()
		return nil
	})
	if errors.Is(err, syscall.ENOENT) {
		err = nil // unlinked while open: the content goes with it
	}
	if err != nil {
		return err
	}
	h.node.contentChanged(c)
	// In front of a bucket, close and fsync wait until it holds the file.
	checkpoint, _, _ := strings.Cut(h.node.Path(nil), "/")
	return h.store().Publish(context.Background(), checkpoint)
}

func (h *handle) Flush(ctx context.Context) syscall.Errno {
	return h.errno("flush", h.commit())
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if err := h.commit(); err != nil {
		return h.errno("fsync", err)
	}
	return h.errno("fsync", h.store().Sync())
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	if err := h.commit(); err != nil {
		h.node.fsys.log.Error("release: content lost", "file", h.node.Path(nil), "err", err)
	}
	h.release()
	return 0
}

func (h *handle) release() {
	h.mu.Lock()
	h.discardPending()
	h.mu.Unlock()
	h.node.forget(h)
}
