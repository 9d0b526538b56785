package fs

import (
	"context"
	"errors"
	"path"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/layout/view"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirNode is a stored, read-write directory. Besides its entries it
// resolves view names (DIR@single, DIR@shards[=SIZE]) of its
// subdirectories.
type dirNode struct {
	fs.Inode
	stored
}

var (
	_ = (fs.NodeLookuper)((*dirNode)(nil))
	_ = (fs.NodeReaddirer)((*dirNode)(nil))
	_ = (fs.NodeGetattrer)((*dirNode)(nil))
	_ = (fs.NodeSetattrer)((*dirNode)(nil))
	_ = (fs.NodeCreater)((*dirNode)(nil))
	_ = (fs.NodeMkdirer)((*dirNode)(nil))
	_ = (fs.NodeSymlinker)((*dirNode)(nil))
	_ = (fs.NodeUnlinker)((*dirNode)(nil))
	_ = (fs.NodeRmdirer)((*dirNode)(nil))
	_ = (fs.NodeRenamer)((*dirNode)(nil))
	_ = (fs.NodeStatfser)((*dirNode)(nil))
	_ = (fs.NodeLinker)((*dirNode)(nil))
	_ = (fs.NodeMknoder)((*dirNode)(nil))
	_ = (fs.NodeFsyncer)((*dirNode)(nil)) // FSYNCDIR: write, rename, fsync(dir)
)

func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > meta.MaxNameLen {
		return nil, syscall.ENAMETOOLONG // as ext4: a create after it would fail the same way
	}
	in, err := n.fsys.store.Namespace().Lookup(n.ino, name)
	if err == nil {
		setAttr(&out.Attr, in)
		return n.fsys.newNode(ctx, n.EmbeddedInode(), in), 0
	}
	if !errors.Is(err, syscall.ENOENT) {
		return nil, toErrno(n.fsys.log, "lookup "+name, err)
	}
	// A written name always wins; only a missing one can be a view.
	base, spec, ok, perr := view.ParseName(name)
	if !ok || perr != nil {
		return nil, syscall.ENOENT
	}
	return n.lookupView(ctx, name, base, spec, out)
}

func (n *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	entries, err := n.fsys.store.Namespace().ReadDir(n.ino)
	if err != nil {
		return nil, toErrno(n.fsys.log, "readdir", err)
	}
	list := make([]fuse.DirEntry, 0, len(entries))
	for _, e := range entries {
		list = append(list, fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Mode})
	}
	if n.fsys.opts.ShowViews {
		list = append(list, n.viewEntries(entries)...)
	}
	return fs.NewListDirStream(list), 0
}

func (n *dirNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.setattr(in, out, syscall.EISDIR, false)
}

// newRecord is the inode template for a new entry made by the caller.
func newRecord(ctx context.Context, mode uint32) meta.Inode {
	t := now()
	rec := meta.Inode{Mode: mode, Atime: t, Mtime: t, Ctime: t}
	if c, ok := fuse.FromContext(ctx); ok {
		rec.Uid, rec.Gid = c.Uid, c.Gid
	}
	return rec
}

func (n *dirNode) create(ctx context.Context, name string, rec meta.Inode, out *fuse.EntryOut) (*fs.Inode, *meta.Inode, syscall.Errno) {
	parent, err := n.fsys.store.Namespace().GetInode(n.ino)
	if err != nil {
		return nil, nil, toErrno(n.fsys.log, "create "+name, err)
	}
	if parent.Mode&syscall.S_ISGID != 0 { // as a local disk: the group goes down, and the bit to folders
		rec.Gid = parent.Gid
		if rec.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			rec.Mode |= syscall.S_ISGID
		}
	}
	in, err := n.fsys.store.Namespace().Create(n.ino, name, rec)
	if err != nil {
		return nil, nil, toErrno(n.fsys.log, "create "+name, err)
	}
	setAttr(&out.Attr, in)
	return n.fsys.newNode(ctx, n.EmbeddedInode(), in), in, 0
}

func (n *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	child, in, errno := n.create(ctx, name, newRecord(ctx, syscall.S_IFREG|mode&07777), out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	node := child.Operations().(*fileNode)
	node.load(in)
	// Not linked under n until Create returns: its path from n's.
	if h, err := node.openBacked(ctx, path.Join(n.Path(nil), name), flags); err != nil {
		return nil, nil, 0, toErrno(n.fsys.log, "create "+name, err)
	} else if h != nil {
		return child, h, 0, 0
	}
	return child, node.newHandle(true, flags&syscall.O_ACCMODE != syscall.O_RDONLY), 0, 0
}

func (n *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	child, _, errno := n.create(ctx, name, newRecord(ctx, syscall.S_IFDIR|mode&07777), out)
	return child, errno
}

func (n *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	rec := newRecord(ctx, syscall.S_IFLNK|0o777)
	rec.Target = target
	child, _, errno := n.create(ctx, name, rec, out)
	return child, errno
}

// Mknod makes a FIFO, socket or device node: a record with no content.
func (n *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
	case syscall.S_IFREG: // mknod(2) of a plain file
	default:
		return nil, syscall.EINVAL
	}
	rec := newRecord(ctx, mode)
	rec.Rdev = dev
	child, _, errno := n.create(ctx, name, rec, out)
	return child, errno
}

// Link adds name as another entry of a stored file, symlink or special
// node: one inode, its content shared, its link count one more.
func (n *dirNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var ino uint64
	switch t := target.(type) {
	case *fileNode:
		ino = t.ino
	case *symlinkNode:
		ino = t.ino
	case *specialNode:
		ino = t.ino
	case *dirNode:
		return nil, syscall.EPERM
	default:
		return nil, syscall.EXDEV // a view's file: not stored as such
	}
	in, err := n.fsys.store.Namespace().Link(ino, n.ino, name)
	if err != nil {
		return nil, toErrno(n.fsys.log, "link "+name, err)
	}
	setAttr(&out.Attr, in)
	return n.fsys.newNode(ctx, n.EmbeddedInode(), in), 0
}

func (n *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	victim := n.GetChild(name)
	if err := n.fsys.store.Namespace().Remove(n.ino, name, false); err != nil {
		return toErrno(n.fsys.log, "unlink "+name, err)
	}
	n.markUnlinked(victim)
	return 0
}

// markUnlinked tells an open file's writers that its record is gone
// because a user removed its last name (see pending.commit); one name of
// several going leaves the record.
func (n *dirNode) markUnlinked(victim *fs.Inode) {
	if victim == nil {
		return
	}
	if f, ok := victim.Operations().(*fileNode); ok {
		if _, err := n.fsys.store.Namespace().GetInode(f.ino); errors.Is(err, syscall.ENOENT) {
			f.unlinked.Store(true)
		}
	}
}

// Fsync makes the folder's entries durable, and with them everything
// written before: a file written, renamed into place and its folder
// synced is kept.
func (n *dirNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	return toErrno(n.fsys.log, "fsync "+n.Path(nil), n.fsys.writes.Sync())
}

func (n *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return toErrno(n.fsys.log, "rmdir "+name, n.fsys.store.Namespace().Remove(n.ino, name, true))
}

func (n *dirNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	dst, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EROFS // into a view
	}
	victim := dst.GetChild(newName)
	if err := n.fsys.store.Namespace().Rename(n.ino, name, dst.ino, newName, flags); err != nil {
		return toErrno(n.fsys.log, "rename "+name, err)
	}
	if victim != n.GetChild(name) {
		dst.markUnlinked(victim) // replaced
	}
	return 0
}

func (n *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return statfs(n.fsys.store, out)
}
