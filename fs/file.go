package fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/ckptfs/ckptfs/cache"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileNode is a stored regular file. Its content lives in the store; open
// handles that write keep their changes private until flush, fsync or
// release commits them.
type fileNode struct {
	fs.Inode
	fsys *FS
	ino  uint64

	mu      sync.Mutex
	content *cache.Content    // committed content, as last loaded or committed
	reader  *cache.FileReader // reads content
	handles map[*handle]struct{}
	gen     uint64 // bumped whenever new content is committed
	seenGen uint64 // gen the kernel's page cache was filled at
	opened  bool

	hot hotOpens // guarded by mu
}

var (
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
	_ = (fs.NodeSetattrer)((*fileNode)(nil))
	_ = (fs.NodeOpener)((*fileNode)(nil))
)

func (n *fileNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	in, err := n.fsys.store.GetInode(n.ino)
	if err != nil {
		return toErrno(n.fsys.log, "getattr", err)
	}
	n.fillAttr(&out.Attr, in)
	return 0
}

// fillAttr reports the size an open writer has reached, as a local file
// system would, although other handles read the committed content.
func (n *fileNode) fillAttr(out *fuse.Attr, in *cache.Inode) {
	setAttr(out, in)
	for _, h := range n.openHandles() {
		if size, dirty := h.pendingSize(); dirty {
			out.Size = uint64(size)
			out.Blocks = (out.Size + 511) / 512
		}
	}
}

func (n *fileNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		h, _ := f.(*handle)
		if h == nil {
			h = n.dirtyHandle()
		}
		var err error
		if h != nil {
			err = h.truncate(int64(size))
		} else {
			err = n.truncateStored(int64(size))
		}
		if err != nil {
			return toErrno(n.fsys.log, "truncate", err)
		}
	}
	rec, err := n.fsys.store.Update(n.ino, func(rec *cache.Inode) error { applyAttr(rec, in); return nil })
	if err != nil {
		return toErrno(n.fsys.log, "setattr", err)
	}
	n.fillAttr(&out.Attr, rec)
	return 0
}

// truncateStored changes the committed length of a file nobody is writing.
func (n *fileNode) truncateStored(size int64) error {
	in, err := n.fsys.store.GetInode(n.ino)
	if err != nil || in.Content.Size == size {
		return err
	}
	n.load(in)
	n.mu.Lock()
	if !n.hot.waitClosed() {
		n.mu.Unlock()
		return syscall.ETXTBSY // see hotOpens
	}
	h := n.newHandleLocked(true) // counted, so no hot open starts meanwhile
	n.mu.Unlock()
	defer h.release()
	if err := h.truncate(size); err != nil {
		return err
	}
	return h.commit()
}

func (n *fileNode) dirtyHandle() *handle {
	for _, h := range n.openHandles() {
		if _, dirty := h.pendingSize(); dirty {
			return h
		}
	}
	return nil
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	in, err := n.fsys.store.GetInode(n.ino)
	if err != nil {
		return nil, 0, toErrno(n.fsys.log, "open", err)
	}
	n.load(in)
	readOnly := flags&syscall.O_ACCMODE == syscall.O_RDONLY
	content, _ := n.current()
	hotReads := readOnly && n.fsys.hot != nil && n.fsys.opts.HotAsWritten
	var key string
	if hotReads {
		key = cache.ContentKey(content)
		current := func() bool { return n.content == content }
		if h := n.hot.open(n.fsys.hot, key, current, n.Path(nil), n.fsys.log); h != nil {
			return h, 0, 0
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.hot.waitClosed() {
		n.fsys.log.Warn("open refused: the file is being read from its hot copy", "file", n.Path(nil))
		return nil, 0, syscall.ETXTBSY
	}
	h := n.newHandleLocked(true)
	if hotReads && n.content == content {
		n.hot.countOpen(n.fsys.hot, key, content.Size, n.fsys.store.NewReader(n.Path(nil), content))
	}
	var fuseFlags uint32
	if n.opened && n.seenGen == n.gen {
		fuseFlags = fuse.FOPEN_KEEP_CACHE // unchanged since the kernel cached it
	}
	n.opened, n.seenGen = true, n.gen
	return h, fuseFlags, 0
}

// load takes a freshly read record's content as the committed content.
// Unchanged content keeps its reader, and with it the readahead state.
func (n *fileNode) load(in *cache.Inode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.content != nil && n.content.Equal(&in.Content) {
		return
	}
	n.content = &in.Content
	n.reader = n.fsys.store.NewReader(n.Path(nil), n.content)
}

// current is the committed content and its reader.
func (n *fileNode) current() (*cache.Content, *cache.FileReader) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.content, n.reader
}

// contentChanged records a commit of c and drops the kernel's cached pages.
func (n *fileNode) contentChanged(c *cache.Content) {
	n.mu.Lock()
	n.content, n.reader = c, n.fsys.store.NewReader(n.Path(nil), c)
	n.gen++
	n.mu.Unlock()
	// Not from inside the request: the kernel may wait on it.
	go n.NotifyContent(0, 0)
}

// newHandle opens a handle. cached says the kernel reads it through the
// FUSE page cache (see hotHandle); handles the kernel does not hold are not.
func (n *fileNode) newHandle(cached bool) *handle {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.newHandleLocked(cached)
}

func (n *fileNode) newHandleLocked(cached bool) *handle {
	h := &handle{node: n, cached: cached}
	if n.handles == nil {
		n.handles = map[*handle]struct{}{}
	}
	n.handles[h] = struct{}{}
	if cached {
		n.hot.cached++
	}
	return h
}

// openHandles snapshots the handles, so that their locks are never taken
// under n.mu (a commit holds its handle's lock and then takes n.mu).
func (n *fileNode) openHandles() []*handle {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*handle, 0, len(n.handles))
	for h := range n.handles {
		out = append(out, h)
	}
	return out
}

func (n *fileNode) forget(h *handle) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.handles, h)
	if h.cached {
		n.hot.cached--
	}
}
