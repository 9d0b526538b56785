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
	"github.com/ckptfs/ckptfs/cache/meta"
)

// pending is a file's uncommitted content, shared by every handle that
// writes it as a local file's page cache is: two writers, or two O_APPEND
// writers (the kernel places appends at the size it knows), see each
// other's writes, and a close or fsync of any of them commits them all.
//
// When the store writes behind (cache.Store.WritesBehind), every write
// lands in a staging file and a commit stages that file as the content, to
// be chunked in the background. Otherwise writes in order from an empty
// file stream straight into ingest; anything else (an out-of-order write, a
// truncate, a read of pending data) moves the content to a staging file,
// which a commit ingests. Either way a commit swaps the file's content in
// one transaction, so readers never see half a file.
//
// Once it fails, every handle whose writes it held gets the error for good
// (see handle.err) and the file keeps its last committed content.
type pending struct {
	node *fileNode

	mu      sync.Mutex
	done    bool          // committed or failed: no longer the node's
	base    *meta.Content // content the first write started from
	stream  *cache.Writer // content written in order
	staged  *os.File      // content written at random
	size    int64
	writers map[*handle]struct{} // handles whose writes it holds
	// mtime is the file's modification time once committed: that of the
	// last write or truncate, or what a utimens after it set (cp -a and
	// tar set times before they close).
	mtime int64
}

// lockPending returns the node's pending content with its lock held,
// starting one from the committed content if create is set; nil if there
// is none and create is not set.
func (n *fileNode) lockPending(create bool) *pending {
	for {
		n.mu.Lock()
		p := n.pending
		if p == nil && create {
			p = &pending{node: n, base: n.content, size: n.content.Size, writers: map[*handle]struct{}{}}
			n.pending = p
		}
		n.mu.Unlock()
		if p == nil {
			return nil
		}
		p.mu.Lock()
		if !p.done {
			return p
		}
		p.mu.Unlock() // finished meanwhile: look again
	}
}

// pendingSize is the length the writers have reached, if any are writing.
func (n *fileNode) pendingSize() (int64, bool) {
	p := n.lockPending(false)
	if p == nil {
		return 0, false
	}
	defer p.mu.Unlock()
	return p.size, true
}

func (p *pending) store() *cache.Store { return p.node.fsys.store }

func (p *pending) write(data []byte, off int64) error {
	if p.stream == nil && p.staged == nil && p.size == 0 && off == 0 && !p.store().WritesBehind() {
		p.stream = p.store().NewWriter()
	}
	if p.stream == nil || off != p.stream.Len() {
		if err := p.toStaging(); err != nil {
			return err
		}
	}
	if p.stream != nil {
		if _, err := p.stream.Write(data); err != nil {
			return err
		}
	} else {
		if grow := off + int64(len(data)) - p.size; grow > 0 {
			if err := p.store().EnsureStagingSpace(grow); err != nil {
				return err
			}
		}
		if _, err := p.staged.WriteAt(data, off); err != nil {
			return fmt.Errorf("staging file: %w", err)
		}
	}
	p.size = max(p.size, off+int64(len(data)))
	p.mtime = now()
	return nil
}

func (p *pending) readAt(dest []byte, off int64) (int, error) {
	if err := p.toStaging(); err != nil {
		return 0, err
	}
	return p.staged.ReadAt(dest[:max(min(int64(len(dest)), p.size-off), 0)], off)
}

// toStaging moves the content into a staging file, which takes writes and
// reads at any offset.
func (p *pending) toStaging() error {
	if p.staged != nil {
		return nil
	}
	content := p.base
	if p.stream != nil {
		c, err := p.stream.Close()
		p.stream = nil
		if err != nil {
			return err
		}
		content = c
	}
	if err := p.store().EnsureStagingSpace(content.Size); err != nil {
		return err
	}
	f, err := os.CreateTemp(p.store().StagingDir(), "write-*")
	if err != nil {
		return fmt.Errorf("staging file: %w", err)
	}
	r := p.store().NewReader(p.node.Path(nil), content)
	if _, err := io.Copy(f, io.NewSectionReader(r, 0, r.Size())); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("staging file: %w", err)
	}
	p.staged = f
	return nil
}

func (p *pending) truncate(size int64) error {
	if p.stream != nil && size == p.stream.Len() {
		return nil
	}
	p.mtime = now()
	if size == 0 {
		p.discard()
		p.base, p.size = &meta.Content{}, 0
		return nil
	}
	if err := p.toStaging(); err != nil {
		return err
	}
	if grow := size - p.size; grow > 0 {
		if err := p.store().EnsureStagingSpace(grow); err != nil {
			return err
		}
	}
	if err := p.staged.Truncate(size); err != nil {
		return fmt.Errorf("staging file: %w", err)
	}
	p.size = size
	return nil
}

// commit stores the content, makes it the file's, and finishes p.
func (p *pending) commit() error {
	defer p.finish()
	var c *meta.Content
	var err error
	switch {
	case p.stream != nil:
		c, err = p.stream.Close()
		p.stream = nil
	case p.staged != nil && p.store().WritesBehind():
		c, err = p.store().Stage(p.staged, p.size)
		p.staged = nil // the store's now
	case p.staged != nil:
		c, err = p.store().Ingest(io.NewSectionReader(p.staged, 0, p.size))
	default:
		c = p.base // opened for writing, nothing changed but maybe a truncate to 0
	}
	if err != nil {
		return err
	}
	n := p.node
	_, err = p.store().Update(n.ino, func(in *meta.Inode) error {
		in.Content = *c
		in.Mtime, in.Ctime = p.mtime, now()
		return nil
	})
	if errors.Is(err, syscall.ENOENT) {
		if !n.unlinked.Load() {
			// The checkpoint was replaced from the bucket under an open
			// writer: say so rather than report the writes as saved.
			return fmt.Errorf("%s was replaced by another mount's version while open for writing: these writes are not kept", n.Path(nil))
		}
		return nil // unlinked while open: the content goes with it
	}
	if err != nil {
		return err
	}
	n.contentChanged(c)
	// In front of a bucket, close and fsync wait until it holds the file.
	checkpoint, _, _ := strings.Cut(n.Path(nil), "/")
	return p.store().Publish(context.Background(), checkpoint)
}

// fail gives err to every handle whose writes p held, and finishes p: the
// file keeps its last committed content.
func (p *pending) fail(err error) {
	for h := range p.writers {
		h.setErr(err)
	}
	p.finish()
}

// finish drops the content and detaches p from its node.
func (p *pending) finish() {
	p.discard()
	p.done = true
	n := p.node
	n.mu.Lock()
	if n.pending == p {
		n.pending = nil
	}
	n.mu.Unlock()
}

func (p *pending) discard() {
	if p.stream != nil {
		p.stream.Abort()
		p.stream = nil
	}
	if p.staged != nil {
		p.staged.Close()
		os.Remove(p.staged.Name())
		p.staged = nil
	}
}
