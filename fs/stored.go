package fs

import (
	"context"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/fs/access"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// stored is what every node of a stored inode holds: the mount and the
// inode number, with what every kind answers alike: getattr, the parts of
// setattr that are not a size, and the extended attributes (xattr.go).
type stored struct {
	fsys *FS
	ino  uint64
}

var (
	_ = (fs.NodeGetattrer)((*stored)(nil))
	_ = (fs.NodeGetxattrer)((*stored)(nil))
	_ = (fs.NodeSetxattrer)((*stored)(nil))
	_ = (fs.NodeRemovexattrer)((*stored)(nil))
	_ = (fs.NodeListxattrer)((*stored)(nil))
)

func (n *stored) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	in, err := n.fsys.store.Namespace().GetInode(n.ino)
	if err != nil {
		return toErrno(n.fsys.log, "getattr", err)
	}
	setAttr(&out.Attr, in)
	return 0
}

// setattr applies chmod, chown and utimens; a size is sizeErr, and a
// symlink keeps its mode.
func (n *stored) setattr(in *fuse.SetAttrIn, out *fuse.AttrOut, sizeErr syscall.Errno, keepMode bool) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		return sizeErr
	}
	rec, err := n.fsys.store.Namespace().Update(n.ino, func(rec *meta.Inode) error {
		mode := rec.Mode
		applyAttr(rec, in)
		if keepMode {
			rec.Mode = mode
		}
		return nil
	})
	if err != nil {
		return toErrno(n.fsys.log, "setattr", err)
	}
	setAttr(&out.Attr, rec)
	return 0
}

// applyAttr applies chmod, chown and utimens parts of a setattr.
func applyAttr(rec *meta.Inode, in *fuse.SetAttrIn) {
	t := now()
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 { // before a chown's new group; see raw.PrivDropper
		rec.Mode = access.WithoutPrivs(rec.Mode, rec.Gid, &in.Caller)
	}
	if mode, ok := in.GetMode(); ok {
		rec.Mode = rec.Mode&syscall.S_IFMT | mode&^syscall.S_IFMT
	}
	if uid, ok := in.GetUID(); ok {
		rec.Uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		rec.Gid = gid
	}
	if at, ok := in.GetATime(); ok {
		rec.Atime = at.UnixNano()
	}
	if mt, ok := in.GetMTime(); ok {
		rec.Mtime = mt.UnixNano()
	}
	rec.Ctime = t
}
