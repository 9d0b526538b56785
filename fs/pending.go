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

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// pending is a file's uncommitted content, shared by every handle that
// writes it as a local file's page cache is: two writers, or two O_APPEND
// writers (the kernel places appends at the size it knows), see each
// other's writes, and a close or fsync of any of them commits them all.
//
// When the store writes behind (store.Store.WritesBehind), every write
// lands in a staging file and a commit stages that file as the content, to
// be chunked in the background; a file whose content is staged still takes
// appends in its staged file, past what its record names (see
// store.Store.LeaseStaged). Otherwise writes in order from an empty file
// stream straight into ingest; anything else (an out-of-order write, a
// truncate, a read of pending data) moves the content to a staging file,
// which a commit ingests. Either way a commit swaps the file's content in
// one transaction, so readers never see half a file.
//
// Once it fails, every handle whose writes it held gets the error for good
// (see handle.err) and the file keeps its last committed content.
type pending struct {
	node *fileNode

	mu   sync.Mutex
	done bool          // committed or failed: no longer the node's
	base *meta.Content // content the first write started from
	// baseReader reads base. It holds a staged base's file open, so the
	// bytes are there after the settler removes its name.
	baseReader *store.FileReader
	stream     *store.Writer // content written in order
	staged     *os.File      // content written at random
	// appending says staged is base's own staged file, written past
	// base.Size only, under the lease release ends.
	appending bool
	release   func()
	size      int64
	uid       uint32               // who the change under way is for (see EnsureStagingSpace)
	writers   map[*handle]struct{} // handles whose writes it holds
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
			p = &pending{node: n, base: n.content, baseReader: n.reader, size: n.content.Size, writers: map[*handle]struct{}{}}
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

func (p *pending) store() *store.Store { return p.node.fsys.store }

func (p *pending) write(data []byte, off int64) error {
	if p.stream == nil && p.staged == nil && p.size == 0 && off == 0 && !p.store().WritesBehind() {
		p.stream = p.store().NewWriter()
	}
	if p.stream == nil && p.staged == nil && off >= p.size && p.size == p.base.Size && p.store().WritesBehind() {
		p.appendInPlace()
	}
	if p.appending && off < p.base.Size {
		if err := p.copyStaged(p.size); err != nil {
			return err
		}
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
		// A write past the end allocates what it writes, not the hole
		// before it.
		if grow := min(off+int64(len(data))-p.size, int64(len(data))); grow > 0 {
			if err := p.store().EnsureStagingSpace(grow, p.uid); err != nil {
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

// appendInPlace makes the staged file of a staged base the staging file,
// if the store lets it: appends then cost what they write, where a copy
// would cost the whole file at every commit.
func (p *pending) appendInPlace() {
	if f, release, ok := p.store().LeaseStaged(p.base); ok {
		p.staged, p.appending, p.release = f, true, release
	}
}

// copyStaged gives up appending in place: the first size bytes of the
// staged file go to a staging file of the writers' own, which may then
// change anything. The staged file loses what was appended to it.
func (p *pending) copyStaged(size int64) error {
	f, err := p.newStagingFile(size)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(io.NewSectionReader(p.staged, 0, size)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("staging file: %w", err)
	}
	p.discard()
	p.staged = f
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
	r := p.baseReader
	if p.stream != nil {
		c, release, err := p.stream.Close()
		p.stream = nil
		if err != nil {
			return err
		}
		defer release() // its chunks stay until they are copied
		r = p.store().NewReader(p.node.Path(nil), c)
	}
	f, err := p.newStagingFile(r.Size())
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, io.NewSectionReader(r, 0, r.Size())); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("staging file: %w", err)
	}
	p.staged = f
	return nil
}

// newStagingFile makes a staging file for size bytes to come.
func (p *pending) newStagingFile(size int64) (*os.File, error) {
	if err := p.store().EnsureStagingSpace(size, p.uid); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(p.store().StagingDir(), "write-*")
	if err != nil {
		return nil, fmt.Errorf("staging file: %w", err)
	}
	return f, nil
}

func (p *pending) truncate(size int64) error {
	if p.stream != nil && size == p.stream.Len() {
		return nil
	}
	p.mtime = now()
	if size == 0 {
		p.discard()
		p.base, p.size = &meta.Content{}, 0
		p.baseReader = p.store().NewReader(p.node.Path(nil), p.base)
		return nil
	}
	if p.appending && size < p.base.Size {
		if err := p.copyStaged(size); err != nil {
			return err
		}
	}
	if err := p.toStaging(); err != nil {
		return err
	}
	// Growing makes a hole, which takes no room.
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
	release := func() {}
	defer func() { release() }() // a stream's chunks stay until the record holds them
	switch {
	case p.stream != nil:
		c, release, err = p.stream.Close()
		p.stream = nil
	case p.appending:
		c = p.store().Restage(p.staged, p.base, p.size)
		p.staged = nil // the store's now; the lease holds until finish
	case p.staged != nil && p.store().WritesBehind():
		c, err = p.store().Stage(p.staged, p.size)
		p.staged = nil // the store's now
	case p.staged != nil:
		c, release, err = p.store().Ingest(io.NewSectionReader(p.staged, 0, p.size))
	default:
		c = p.base // opened for writing, nothing changed but maybe a truncate to 0
	}
	if err == nil && len(c.Chunks) > 0 && !c.Equal(p.base) {
		err = p.store().SyncChunks() // no record names chunks not durable
	}
	if err != nil {
		return err
	}
	n := p.node
	_, err = p.store().Namespace().Update(n.ino, func(in *meta.Inode) error {
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
		// Unlinked while open: its open handles read what was written, and
		// a staged file no record took goes now, not at the next mount.
		n.contentChanged(c)
		if c.Staged != 0 && !p.appending {
			p.store().Unstage(c)
		}
		return nil
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

// discard drops what was written and not committed.
func (p *pending) discard() {
	if p.stream != nil {
		p.stream.Abort()
		p.stream = nil
	}
	if p.appending {
		if p.staged != nil { // what it appended is nobody's
			p.staged.Truncate(p.base.Size)
			p.staged.Close()
			p.staged = nil
		}
		p.appending = false
		p.release()
	}
	if p.staged != nil {
		p.staged.Close()
		os.Remove(p.staged.Name())
		p.staged = nil
	}
}
