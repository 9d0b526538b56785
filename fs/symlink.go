package fs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// symlinkNode is a stored symbolic link.
type symlinkNode struct {
	fs.Inode
	fsys *FS
	ino  uint64
}

var (
	_ = (fs.NodeReadlinker)((*symlinkNode)(nil))
	_ = (fs.NodeGetattrer)((*symlinkNode)(nil))
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
