package fs

import (
	"context"
	"errors"
	"github.com/ckptfs/ckptfs/fs/access"
	"github.com/ckptfs/ckptfs/fs/metrics"
	"io"
	"runtime"
	"sync"
	"syscall"
	"weak"

	"github.com/ckptfs/ckptfs/cache/hot"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/fs/hotopen"
	"github.com/ckptfs/ckptfs/layout/view"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
)

// viewDirNode is a read-only view directory (DIR@single, DIR@shards=SIZE).
// Its inode number derives from the folder's state, so a changed folder
// gives a new directory and no stale pages survive in the kernel.
type viewDirNode struct {
	fs.Inode
	viewXattrs
	fsys    *FS
	id      views.PlanID
	key     string // the folder state it shows
	dirPath string // the folder's, for planning and messages
	name    string // base@spec
	kind    string // metrics.Single or metrics.Shards
	ino     uint64
	mtime   int64
	acc     access.Rights // the folder's, minus write, when looked up (see current)

	mu sync.Mutex
	// last is the view as planned for key, while anything still holds it:
	// an open file of it pins it (roHandle), so it reads the snapshot it
	// was opened on whatever the folder does meanwhile.
	last weak.Pointer[views.View]
}

var (
	_ = (fs.NodeLookuper)((*viewDirNode)(nil))
	_ = (fs.NodeReaddirer)((*viewDirNode)(nil))
	_ = (fs.NodeOpendirer)((*viewDirNode)(nil))
	_ = (fs.NodeGetattrer)((*viewDirNode)(nil))
	_ = (fs.NodeCreater)((*viewDirNode)(nil))
	_ = (fs.NodeMkdirer)((*viewDirNode)(nil))
	_ = (fs.NodeUnlinker)((*viewDirNode)(nil))
	_ = (fs.NodeRmdirer)((*viewDirNode)(nil))
	_ = (fs.NodeRenamer)((*viewDirNode)(nil))
	_ = (fs.NodeSymlinker)((*viewDirNode)(nil))
	_ = (fs.NodeSetattrer)((*viewDirNode)(nil))
	_ = (fs.NodeStatfser)((*viewDirNode)(nil))
)

// lookupView resolves name = base@spec for the subdirectory base. Only a
// caller who may search base has it planned: planning settles and reads
// the folder's files.
func (n *dirNode) lookupView(ctx context.Context, name, base string, spec view.Spec, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, err := n.fsys.store.Namespace().Lookup(n.ino, base)
	if err != nil || dir.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, syscall.ENOENT
	}
	if !access.Of(dir).Permits(ctx, access.Search) {
		return nil, syscall.EACCES
	}
	v, err := n.fsys.views.View(dir.Ino, n.Path(nil)+"/"+base, spec)
	if err != nil {
		return nil, toErrno(n.fsys.log, "view "+name, err)
	}
	kind := metrics.Single
	if spec.Shards {
		kind = metrics.Shards
	}
	acc := access.Of(dir)
	node := &viewDirNode{fsys: n.fsys, id: views.PlanID{Dir: dir.Ino, Spec: spec}, key: v.Key, dirPath: n.Path(nil) + "/" + base,
		name: name, kind: kind, mtime: dir.Mtime, acc: acc, last: weak.Make(v),
		ino: syntheticIno("view", dir.Ino, name, v.Key, acc.Uid, acc.Gid, acc.Perm)}
	node.fillAttr(&out.Attr)
	return n.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: node.ino}), 0
}

// viewEntries lists the view names of subdirectories with weights, for
// mounts with --show-views.
func (n *dirNode) viewEntries(entries []meta.DirEntry) []fuse.DirEntry {
	var out []fuse.DirEntry
	for _, e := range entries {
		if e.Mode != syscall.S_IFDIR {
			continue
		}
		children, err := n.fsys.store.Namespace().ReadDir(e.Ino)
		if err != nil || !views.HasWeights(children) {
			continue
		}
		for _, suffix := range []string{"@single", "@shards"} {
			out = append(out, fuse.DirEntry{Name: e.Name + suffix, Mode: syscall.S_IFDIR, Ino: syntheticIno("listed", e.Ino, suffix)})
		}
	}
	return out
}

func (n *viewDirNode) fillAttr(out *fuse.Attr) {
	setAttr(out, &meta.Inode{Ino: n.ino, Mode: syscall.S_IFDIR | n.acc.Perm, Uid: n.acc.Uid, Gid: n.acc.Gid, Atime: n.mtime, Mtime: n.mtime, Ctime: n.mtime})
}

// current is the view directory's rights now, the folder's: a chmod or
// chown of the folder applies to a view looked up before it.
func (n *viewDirNode) current() (access.Rights, error) {
	return n.fsys.accessNow(n.id.Dir)
}

// Getattr answers with the rights the folder has now, or, when the folder
// is gone, the one it had.
func (n *viewDirNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(&out.Attr)
	if acc, err := n.current(); err == nil {
		out.Mode, out.Uid, out.Gid = syscall.S_IFDIR|acc.Perm, acc.Uid, acc.Gid
	}
	return 0
}

// allows checks the caller against the folder's rights now: the kernel
// checks the attributes it cached, which may be a second old.
func (n *viewDirNode) allows(ctx context.Context, want uint32) syscall.Errno {
	acc, err := n.current()
	if err != nil {
		return toErrno(n.fsys.log, "view "+n.dirPath, err)
	}
	if !acc.Permits(ctx, want) {
		return syscall.EACCES
	}
	return 0
}

func (n *viewDirNode) Opendir(ctx context.Context) syscall.Errno { return n.allows(ctx, access.Read) }

// plan is the node's view: the one still in use, or the plan cache's
// (see views.Plans.Again).
func (n *viewDirNode) plan() (*views.View, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if v := n.last.Value(); v != nil {
		return v, nil
	}
	v, err := n.fsys.views.Again(n.id, n.key, n.dirPath)
	if err == nil {
		n.last = weak.Make(v)
	}
	return v, err
}

func (n *viewDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.allows(ctx, access.Search); errno != 0 {
		return nil, errno
	}
	v, err := n.plan()
	if err != nil {
		return nil, toErrno(n.fsys.log, "view "+n.dirPath, err)
	}
	if i, ok := v.FileIndex(name); ok {
		f := v.Files[i]
		readAt := func(ctx context.Context, p []byte, off int64) (int, error) {
			v, err := n.plan()
			if err != nil {
				return 0, err
			}
			return v.ReadAt(ctx, i, p, off)
		}
		sources := make([]uint64, len(v.Weights))
		key := hot.Key("view", n.key, n.name, name)
		for i, in := range v.Weights {
			sources[i] = in.Ino
			if in.Content.Staged != 0 {
				key = hotopen.NoCopy // a file on its backing file changes in place under one key
			}
		}
		node, err := n.newFile(name, f.Size, sources, n.mtime, readAt, key)
		if err != nil {
			return nil, toErrno(n.fsys.log, "view "+n.dirPath, err)
		}
		node.pin = func() (func(), error) {
			v, err := n.plan()
			if err != nil {
				return nil, err
			}
			contents := make([]*meta.Content, len(v.Weights))
			for i, in := range v.Weights {
				contents[i] = &in.Content
			}
			unpin := n.fsys.store.Pin(contents...)
			return func() {
				unpin()
				runtime.KeepAlive(v) // held until here: see viewDirNode.last
			}, nil
		}
		node.fillAttr(&out.Attr)
		return n.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: node.ino}), 0
	}
	for _, x := range v.Extra {
		if x.Name != name {
			continue
		}
		if x.Inode.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			node := &symlinkNode{stored: stored{n.fsys, x.Inode.Ino}}
			setAttr(&out.Attr, x.Inode)
			return n.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: x.Inode.Ino}), 0
		}
		r := n.fsys.store.NewReader(n.Path(nil)+"/"+name, &x.Inode.Content)
		key := store.ContentKey(&x.Inode.Content)
		if x.Inode.Content.Staged != 0 {
			key = hotopen.NoCopy
		}
		node, err := n.newFile(name, r.Size(), []uint64{x.Inode.Ino}, x.Inode.Mtime, r.ReadAtContext, key)
		if err != nil {
			return nil, toErrno(n.fsys.log, "view "+n.dirPath, err)
		}
		node.pin = func() (func(), error) { return n.fsys.store.Pin(&x.Inode.Content), nil }
		node.fillAttr(&out.Attr)
		return n.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: node.ino}), 0
	}
	return nil, syscall.ENOENT
}

func (n *viewDirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	v, err := n.plan()
	if err != nil {
		return nil, toErrno(n.fsys.log, "view "+n.dirPath, err)
	}
	var list []fuse.DirEntry
	for _, f := range v.Files {
		list = append(list, fuse.DirEntry{Name: f.Name, Mode: syscall.S_IFREG, Ino: syntheticIno("file", n.ino, f.Name)})
	}
	for _, x := range v.Extra {
		list = append(list, fuse.DirEntry{Name: x.Name, Mode: x.Inode.Mode & syscall.S_IFMT, Ino: syntheticIno("file", n.ino, x.Name)})
	}
	return fs.NewListDirStream(list), 0
}

func (n *viewDirNode) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (n *viewDirNode) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (n *viewDirNode) Symlink(context.Context, string, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (n *viewDirNode) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }
func (n *viewDirNode) Rmdir(context.Context, string) syscall.Errno  { return syscall.EROFS }
func (n *viewDirNode) Rename(context.Context, string, fs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}
func (n *viewDirNode) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (n *viewDirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return statfs(n.fsys.store, out)
}

// roFileNode is a read-only file of a view: a synthesized view file or a
// folder file passed through. Its content never changes under its inode
// number, so the kernel may keep its pages, and a hot copy named by hotKey
// (see hotopen.Opens) serves it once it has been opened twice.
type roFileNode struct {
	fs.Inode
	viewXattrs
	fsys    *FS
	dir     *viewDirNode
	ino     uint64
	size    int64
	sources []uint64      // the stored files it draws from, whose rights it has
	acc     access.Rights // theirs when looked up; Getattr and Open read them again
	mtime   int64
	readAt  func(ctx context.Context, p []byte, off int64) (int, error)
	pin     func() (release func(), err error) // holds what readAt reads while a handle is open
	hotKey  string
	reads   prometheus.Counter // bytes served, by view kind

	mu  sync.Mutex
	hot hotopen.Opens // guarded by mu
}

var (
	_ = (fs.NodeGetattrer)((*roFileNode)(nil))
	_ = (fs.NodeSetattrer)((*roFileNode)(nil))
	_ = (fs.NodeOpener)((*roFileNode)(nil))
	_ = (fs.NodeReader)((*roFileNode)(nil))
	_ = (fs.FileReleaser)((*roHandle)(nil))
)

// newFile makes the node of a file of the view, drawn from the stored
// files sources.
func (n *viewDirNode) newFile(name string, size int64, sources []uint64, mtime int64, readAt func(context.Context, []byte, int64) (int, error), hotKey string) (*roFileNode, error) {
	acc, err := n.fsys.accessNow(sources...)
	if err != nil {
		return nil, err
	}
	f := &roFileNode{fsys: n.fsys, dir: n, ino: syntheticIno("file", n.ino, name, acc.Uid, acc.Gid, acc.Perm), size: size,
		sources: sources, acc: acc, mtime: mtime, readAt: readAt, hotKey: hotKey, reads: n.fsys.metrics.Reads(n.kind)}
	f.hot.Guard(&f.mu)
	return f, nil
}

func (n *roFileNode) fillAttr(out *fuse.Attr) {
	in := &meta.Inode{Ino: n.ino, Mode: syscall.S_IFREG | n.acc.Perm, Uid: n.acc.Uid, Gid: n.acc.Gid, Atime: n.mtime, Mtime: n.mtime, Ctime: n.mtime}
	in.Content.Size = n.size
	setAttr(out, in)
}

// Getattr answers with the rights the sources have now, or, when one is
// gone, the one they had.
func (n *roFileNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(&out.Attr)
	if acc, err := n.fsys.accessNow(n.sources...); err == nil {
		out.Mode, out.Uid, out.Gid = syscall.S_IFREG|acc.Perm, acc.Uid, acc.Gid
	}
	return 0
}

func (n *roFileNode) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *roFileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	// What the sources and their folder allow now: the kernel checked the
	// attributes it cached, which may be from before a chmod.
	if errno := n.dir.allows(ctx, access.Search); errno != 0 {
		return nil, 0, errno
	}
	acc, err := n.fsys.accessNow(n.sources...)
	if err != nil {
		return nil, 0, toErrno(n.fsys.log, "open "+n.Path(nil), err)
	}
	if !acc.Permits(ctx, access.Read) {
		return nil, 0, syscall.EACCES
	}
	always := func() bool { return true }
	if h := n.hot.Open(n.fsys.hot, n.hotKey, always, n.Path(nil), n.fsys.log); h != nil {
		return h, 0, 0
	}
	release, err := n.pin()
	if err != nil {
		return nil, 0, toErrno(n.fsys.log, "open "+n.Path(nil), err)
	}
	h := &roHandle{node: n, release: release}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hot.Cached++
	n.hot.CountOpen(n.fsys.hot, n.hotKey, n.size, readAtFunc(func(p []byte, off int64) (int, error) { return n.readAt(context.Background(), p, off) }))
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *roFileNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	got, err := n.readAt(ctx, dest, off)
	if err != nil && err != io.EOF {
		return nil, toErrno(n.fsys.log, "read "+n.Path(nil), err)
	}
	n.reads.Add(float64(got))
	return fuse.ReadResultData(dest[:got]), 0
}

// roHandle is an open of a view file through the FUSE page cache; the node
// serves its reads.
type roHandle struct {
	node    *roFileNode
	release func() // lets go of what the file reads, held while it is open
}

func (h *roHandle) Release(ctx context.Context) syscall.Errno {
	h.release()
	h.node.mu.Lock()
	defer h.node.mu.Unlock()
	h.node.hot.Cached--
	return 0
}

// readAtFunc turns a read function into an io.ReaderAt.
type readAtFunc func(p []byte, off int64) (int, error)

func (f readAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }

// accessNow is the rights of a view file drawn from the stored files
// inos (or of a view directory, from its folder), as their records are
// now. One of them gone makes the view stale (ESTALE), which has the
// kernel look its path up again.
func (f *FS) accessNow(inos ...uint64) (access.Rights, error) {
	records := make([]*meta.Inode, len(inos))
	for i, ino := range inos {
		in, err := f.store.Namespace().GetInode(ino)
		if errors.Is(err, syscall.ENOENT) {
			return access.Rights{}, syscall.ESTALE
		}
		if err != nil {
			return access.Rights{}, err
		}
		records[i] = in
	}
	return access.OfWeights(records), nil
}
