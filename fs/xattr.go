package fs

// The extended attributes of stored nodes, kept in the inode's record.
// Only the user namespace is kept, as on a local file system mounted
// without ACLs or security labels: the others answer ENOTSUP, so cp -a,
// rsync -X and tar --xattrs copy what is kept and go on without the rest.

import (
	"context"
	"strings"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
)

const userXattrs = "user."

// unsupportedXattr is the answer for a name outside the user namespace.
// security.capability is asked by the kernel itself (before writes, and
// by exec): "none" is the truth there.
func unsupportedXattr(name string) syscall.Errno {
	if strings.HasPrefix(name, "security.") {
		return syscall.ENODATA
	}
	return syscall.ENOTSUP
}

func (n *stored) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !strings.HasPrefix(attr, userXattrs) {
		return 0, unsupportedXattr(attr)
	}
	in, err := n.fsys.store.Namespace().GetInode(n.ino)
	if err != nil {
		return 0, toErrno(n.fsys.log, "getxattr", err)
	}
	v, ok := in.Xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *stored) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	in, err := n.fsys.store.Namespace().GetInode(n.ino)
	if err != nil {
		return 0, toErrno(n.fsys.log, "listxattr", err)
	}
	var list []byte
	for name := range in.Xattrs {
		list = append(append(list, name...), 0)
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

// Setxattr flags, as setxattr(2).
const (
	xattrCreate  = 1
	xattrReplace = 2
)

func (n *stored) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if !strings.HasPrefix(attr, userXattrs) {
		return syscall.ENOTSUP
	}
	if len(attr) > meta.MaxXattrName {
		return syscall.ERANGE
	}
	_, err := n.fsys.store.Namespace().Update(n.ino, func(in *meta.Inode) error {
		old, exists := in.Xattrs[attr]
		switch {
		case flags&xattrCreate != 0 && exists:
			return syscall.EEXIST
		case flags&xattrReplace != 0 && !exists:
			return syscall.ENODATA
		}
		size := in.XattrBytes() - len(old) + len(data)
		if !exists {
			size += len(attr)
		}
		if size > meta.MaxXattrSize {
			return syscall.ENOSPC // as ext4 when the attributes fill their block
		}
		if in.Xattrs == nil {
			in.Xattrs = map[string][]byte{}
		}
		in.Xattrs[attr] = append([]byte(nil), data...)
		in.Ctime = now()
		return nil
	})
	return toErrno(n.fsys.log, "setxattr", err)
}

func (n *stored) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if !strings.HasPrefix(attr, userXattrs) {
		return syscall.ENOTSUP
	}
	_, err := n.fsys.store.Namespace().Update(n.ino, func(in *meta.Inode) error {
		if _, ok := in.Xattrs[attr]; !ok {
			return syscall.ENODATA
		}
		delete(in.Xattrs, attr)
		in.Ctime = now()
		return nil
	})
	return toErrno(n.fsys.log, "removexattr", err)
}

// viewXattrs answers extended-attribute changes of view nodes, which are
// read-only: EROFS, as for every other change (go-fuse's default, ENODATA,
// would say "no such attribute").
type viewXattrs struct{}

func (viewXattrs) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EROFS
}

func (viewXattrs) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }
