package fs

import (
	"context"
	"sync"

	"github.com/ckptfs/ckptfs/cache/writes"
)

// pending is a file's uncommitted content (a writes.Draft), shared by
// every handle that writes it as a local file's page cache is: two
// writers, or two O_APPEND writers (the kernel places appends at the size
// it knows), see each other's writes, and a close or fsync of any of them
// commits them all.
//
// Once it fails, every handle whose writes it held gets the error for good
// (see handle.err) and the file keeps its last committed content.
type pending struct {
	node *fileNode

	mu      sync.Mutex
	done    bool // committed or failed: no longer the node's
	draft   *writes.Draft
	writers map[*handle]struct{} // handles whose writes it holds
}

// lockPending returns the node's pending content with its lock held,
// starting one from the committed content if create is set; nil if there
// is none and create is not set.
func (n *fileNode) lockPending(create bool) *pending {
	for {
		n.mu.Lock()
		p := n.pending
		if p == nil && create {
			draft := n.fsys.writes.NewDraft(n.ino, n.Path(nil), n.content, n.reader)
			p = &pending{node: n, draft: draft, writers: map[*handle]struct{}{}}
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
	return p.draft.Size(), true
}

// commit stores the content, makes it the file's, and finishes p.
func (p *pending) commit() error {
	defer p.finish()
	n := p.node
	c, r, err := p.draft.Commit(context.Background(), n.unlinked.Load())
	if c != nil {
		n.contentChanged(c, r)
	}
	return err
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
	p.draft.Discard()
	p.done = true
	n := p.node
	n.mu.Lock()
	if n.pending == p {
		n.pending = nil
	}
	n.mu.Unlock()
}
