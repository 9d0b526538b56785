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
	stored
}

var (
	_ = (fs.NodeReadlinker)((*symlinkNode)(nil))
	_ = (fs.NodeGetattrer)((*symlinkNode)(nil))
	_ = (fs.NodeSetattrer)((*symlinkNode)(nil))
)

func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	in, err := n.fsys.store.Namespace().GetInode(n.ino)
	if err != nil {
		return nil, toErrno(n.fsys.log, "readlink", err)
	}
	return []byte(in.Target), 0
}

// Setattr changes a link's owner and times (lchown, lutimes), as cp -a and
// tar -x do; a link's mode means nothing and is left as it is.
func (n *symlinkNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.setattr(in, out, syscall.EINVAL, true)
}
