package fs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// specialNode is a stored FIFO, socket or device node: metadata only. The
// kernel serves their opens itself (a pipe, a socket; devices not at all
// on a nodev mount), so tools that stage through them, and trees that hold
// them, copy in and out.
type specialNode struct {
	fs.Inode
	stored
}

var (
	_ = (fs.NodeGetattrer)((*specialNode)(nil))
	_ = (fs.NodeSetattrer)((*specialNode)(nil))
)

func (n *specialNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.setattr(in, out, syscall.EINVAL, false)
}
