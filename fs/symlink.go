package fs

import (
	"context"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// symlinkNode is a stored symbolic link.
type symlinkNode struct {
	fs.Inode
	noXattrs
	fsys *FS
	ino  uint64
}

var (
	_ = (fs.NodeReadlinker)((*symlinkNode)(nil))
	_ = (fs.NodeGetattrer)((*symlinkNode)(nil))
	_ = (fs.NodeSetattrer)((*symlinkNode)(nil))
	_ = (fs.NodeSetxattrer)((*symlinkNode)(nil))
)

func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	in, err := n.fsys.store.GetInode(n.ino)
	if err != nil {
		return nil, toErrno(n.fsys.log, "readlink", err)
	}
	return []byte(in.Target), 0
}

func (n *symlinkNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	in, err := n.fsys.store.GetInode(n.ino)
	if err != nil {
		return toErrno(n.fsys.log, "getattr", err)
	}
	setAttr(&out.Attr, in)
	return 0
}

// Setattr changes a link's owner and times (lchown, lutimes), as cp -a and
// tar -x do; a link's mode means nothing and is left as it is.
func (n *symlinkNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		return syscall.EINVAL
	}
	rec, err := n.fsys.store.Update(n.ino, func(rec *meta.Inode) error {
		mode := rec.Mode
		applyAttr(rec, in)
		rec.Mode = mode
		return nil
	})
	if err != nil {
		return toErrno(n.fsys.log, "setattr", err)
	}
	setAttr(&out.Attr, rec)
	return 0
}
