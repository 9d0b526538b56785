package fs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/fs/hotopen"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileNode is a stored regular file. Its content lives in the store; the
// writes of open handles stay pending (see pending) until a flush, fsync or
// release commits them.
type fileNode struct {
	fs.Inode
	stored

	mu      sync.Mutex
	content *meta.Content     // committed content, as last loaded or committed
	reader  *store.FileReader // reads content
	pending *pending          // uncommitted writes, if any
	// unlinked is set when a user removes the file or renames another
	// over it; a record gone without it was replaced from a bucket.
	unlinked atomic.Bool
	gen      uint64 // bumped whenever new content is committed
	seenGen  uint64 // gen the kernel's page cache was filled at
	opened   bool
	// handles counts the open handles; while there are any, content is
	// pinned in the store, so an unlink or another writer's commit does
	// not let reclaim free what they read.
	handles int
	unpin   func()
	record  *meta.Inode // as last read, for the attributes of an unlinked open file

	hot    hotopen.Opens // guarded by mu
	backed *backedOpens  // guarded by mu; see backed.go
}

var (
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
	_ = (fs.NodeSetattrer)((*fileNode)(nil))
	_ = (fs.NodeOpener)((*fileNode)(nil))
)

func (n *fileNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	in, err := n.fsys.store.Namespace().GetInode(n.ino)
	if errors.Is(err, syscall.ENOENT) && n.unlinked.Load() {
		n.mu.Lock()
		var last *meta.Inode // an open file outlives its name, as on a local disk
		if n.record != nil {
			rec := *n.record
			rec.Content = *n.content // what its handles committed since
			last = &rec
		}
		n.mu.Unlock()
		if last != nil {
			n.fillAttr(&out.Attr, last)
			out.Nlink = 0
			return 0
		}
	}
	if err != nil {
		return toErrno(n.fsys.log, "getattr", err)
	}
	n.mu.Lock()
	n.record = in
	n.mu.Unlock()
	n.fillAttr(&out.Attr, in)
	return 0
}

// fillAttr reports the size an open writer has reached, as a local file
// system would, although other handles read the committed content.
func (n *fileNode) fillAttr(out *fuse.Attr, in *meta.Inode) {
	setAttr(out, in)
	size, writing := n.backedSize()
	if !writing {
		size, writing = n.pendingSize()
	}
	if writing {
		out.Size = uint64(size)
		out.Blocks = (out.Size + 511) / 512
	}
}

func (n *fileNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if backed, err := n.backedSetattr(in); err != nil {
		return toErrno(n.fsys.log, "setattr", err)
	} else if backed {
		return n.setRecordAttr(in, out)
	}
	if size, ok := in.GetSize(); ok {
		var err error
		uid := callerUid(ctx)
		if h, _ := f.(*handle); h != nil {
			err = h.truncate(uid, int64(size))
		} else if p := n.lockPending(false); p != nil {
			err = p.draft.Truncate(int64(size), uid) // a path truncate while others write
			if err != nil {
				p.fail(err)
			}
			p.mu.Unlock()
		} else {
			err = n.truncateStored(uid, int64(size))
			if err == errBackedSince {
				return n.Setattr(ctx, f, in, out)
			}
		}
		if err != nil {
			return toErrno(n.fsys.log, "truncate", err)
		}
	}
	if mt, ok := in.GetMTime(); ok {
		if p := n.lockPending(false); p != nil {
			p.draft.SetMtime(mt.UnixNano()) // what the commit will keep
			p.mu.Unlock()
		}
	}
	return n.setRecordAttr(in, out)
}

// setRecordAttr applies chmod, chown and utimens to the record.
func (n *fileNode) setRecordAttr(in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	rec, err := n.fsys.store.Namespace().Update(n.ino, func(rec *meta.Inode) error { applyAttr(rec, in); return nil })
	if err != nil {
		return toErrno(n.fsys.log, "setattr", err)
	}
	n.fillAttr(&out.Attr, rec)
	return 0
}

// errBackedSince is truncateStored's answer when the file got a backing
// file after Setattr looked: Setattr starts again.
var errBackedSince = errors.New("a backing file started meanwhile")

// truncateStored changes the committed length of a file nobody is
// writing, for uid.
func (n *fileNode) truncateStored(uid uint32, size int64) error {
	in, err := n.fsys.store.Namespace().GetInode(n.ino)
	if err != nil || in.Content.Size == size {
		return err
	}
	n.load(in)
	n.mu.Lock()
	if !n.hot.WaitClosed() {
		n.mu.Unlock()
		return syscall.ETXTBSY // see hotopen.Opens
	}
	if n.backed != nil { // started since Setattr looked
		n.mu.Unlock()
		return errBackedSince
	}
	h := n.newHandleLocked(true, true) // counted, so no hot open or backing file starts meanwhile
	n.mu.Unlock()
	defer n.forget(h)
	if err := h.truncate(uid, size); err != nil {
		return err
	}
	return h.commit(true)
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	in, err := n.fsys.store.Namespace().GetInode(n.ino)
	if err != nil {
		return nil, 0, toErrno(n.fsys.log, "open", err)
	}
	n.load(in)
	if h, err := n.openBacked(ctx, n.Path(nil), flags); err != nil {
		return nil, 0, toErrno(n.fsys.log, "open", err)
	} else if h != nil {
		if flags&syscall.O_TRUNC != 0 { // the kernel leaves it to the daemon (atomic_o_trunc)
			if _, err := n.backedSetattr(truncateTo(0)); err != nil {
				h.Release(ctx)
				return nil, 0, toErrno(n.fsys.log, "open", err)
			}
		}
		return h, 0, 0
	}
	readOnly := flags&syscall.O_ACCMODE == syscall.O_RDONLY && flags&syscall.O_TRUNC == 0
	content, _ := n.current()
	// Staged content gets no copy: it is a local file already, and its key
	// changes once it is chunked.
	hotReads := readOnly && n.fsys.hot != nil && n.fsys.opts.HotAsWritten && content.Staged == 0
	var key string
	if hotReads {
		key = store.ContentKey(content)
		current := func() bool { return n.content == content }
		if h := n.hot.Open(n.fsys.hot, key, current, n.Path(nil), n.fsys.log); h != nil {
			return h, 0, 0
		}
	}
	h, fuseFlags, errno := n.openCached(readOnly, hotReads, key, content)
	if errno != 0 || flags&syscall.O_TRUNC == 0 {
		return h, fuseFlags, errno
	}
	// The kernel leaves O_TRUNC to the daemon (atomic_o_trunc).
	if err := h.truncate(callerUid(ctx), 0); err != nil {
		n.forget(h)
		return nil, 0, toErrno(n.fsys.log, "open", err)
	}
	return h, fuseFlags &^ fuse.FOPEN_KEEP_CACHE, 0
}

// openCached opens a handle the kernel reads through the page cache.
func (n *fileNode) openCached(readOnly, hotReads bool, key string, content *meta.Content) (*handle, uint32, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	// No wait for the hot opens to go, unlike truncateStored: a release of
	// this node that reached the daemon before this open has run (see
	// raw.ReleaseOrder), and one behind it waits for this open to end.
	if n.hot.Hot() {
		n.fsys.log.Warn("open refused: the file is being read from its hot copy", "file", n.Path(nil))
		return nil, 0, syscall.ETXTBSY
	}
	h := n.newHandleLocked(true, !readOnly)
	if hotReads && n.content == content {
		n.hot.CountOpen(n.fsys.hot, key, content.Size, n.fsys.store.NewReader(n.Path(nil), content))
	}
	var fuseFlags uint32
	if n.opened && n.seenGen == n.gen {
		fuseFlags = fuse.FOPEN_KEEP_CACHE // unchanged since the kernel cached it
	}
	n.opened, n.seenGen = true, n.gen
	return h, fuseFlags, 0
}

// truncateTo is a setattr of the size alone.
func truncateTo(size uint64) *fuse.SetAttrIn {
	in := &fuse.SetAttrIn{}
	in.Valid, in.Size = fuse.FATTR_SIZE, size
	return in
}

// load takes a freshly read record's content as the committed content.
// Unchanged content keeps its reader.
func (n *fileNode) load(in *meta.Inode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.record = in
	if n.content != nil && n.content.Equal(&in.Content) {
		return
	}
	n.setContentLocked(&in.Content, n.fsys.store.NewReader(n.Path(nil), &in.Content))
}

// setContentLocked makes c, which r reads, the committed content, pinned
// while handles are open.
func (n *fileNode) setContentLocked(c *meta.Content, r *store.FileReader) {
	n.content, n.reader = c, r
	if n.handles > 0 {
		unpin := n.unpin
		n.unpin = n.fsys.store.Pin(c)
		unpin()
	}
}

// current is the committed content and its reader.
func (n *fileNode) current() (*meta.Content, *store.FileReader) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.content, n.reader
}

// contentChanged records a commit of c, which r reads, and drops the
// kernel's cached pages.
func (n *fileNode) contentChanged(c *meta.Content, r *store.FileReader) {
	n.mu.Lock()
	n.setContentLocked(c, r)
	n.gen++
	n.mu.Unlock()
	// Not from inside the request: the kernel may wait on it.
	go n.NotifyContent(0, 0)
}

// newHandle opens a handle. cached says the kernel reads it through the
// FUSE page cache (see hotopen.Handle); handles the kernel does not hold are not.
func (n *fileNode) newHandle(cached, writable bool) *handle {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.newHandleLocked(cached, writable)
}

func (n *fileNode) newHandleLocked(cached, writable bool) *handle {
	h := &handle{node: n, cached: cached, writable: writable, ra: store.NewReadahead()}
	if cached {
		n.hot.Cached++
	}
	if n.handles++; n.handles == 1 {
		n.unpin = n.fsys.store.Pin(n.content)
	}
	return h
}

func (n *fileNode) forget(h *handle) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h.cached {
		n.hot.Cached--
	}
	if n.handles--; n.handles == 0 {
		n.unpin()
		n.unpin = nil
	}
}
