package fs

import (
	"context"
	"syscall"
)

// noXattrs answers extended-attribute calls as a file system that stores
// none: there are none to get or list (ENODATA, an empty list), and
// setting one is ENOTSUP. go-fuse's default answers a set with ENODATA,
// which cp -a takes for a failure ("preserving permissions: No data
// available") where ENOTSUP makes it go on as on any file system without
// ACLs or xattrs.
type noXattrs struct{}

func (noXattrs) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.ENOTSUP
}
