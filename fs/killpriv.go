package fs

// The mount takes over the clearing of set-user-ID and set-group-ID bits
// (FUSE_HANDLE_KILLPRIV_V2). Without it the kernel asks for the
// security.capability attribute before every write(2) to learn whether
// there is a privilege to remove: a second round trip per WRITE, half the
// requests of a cp into the mount (256 GETXATTR for 256 MiB, 1 with it).
// With it the kernel flags the requests of a caller without CAP_FSETID
// that must drop them (a write, an O_TRUNC open, a truncate or a chown),
// and the daemon clears the bits as Linux's VFS would. No file here has a
// security.capability (see unsupportedXattr), so the bits are all there is.

import (
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/fs/access"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dropPrivs applies access.WithoutPrivs to inode ino's record for
// caller, writing it only if that changes it.
func (f *FS) dropPrivs(ino uint64, caller *fuse.Caller) syscall.Errno {
	ns := f.store.Namespace()
	rec, err := ns.GetInode(ino)
	if err != nil || access.WithoutPrivs(rec.Mode, rec.Gid, caller) == rec.Mode {
		return toErrno(f.log, "drop set-ID bits", err)
	}
	_, err = ns.Update(ino, func(rec *meta.Inode) error {
		rec.Mode = access.WithoutPrivs(rec.Mode, rec.Gid, caller)
		rec.Ctime = now()
		return nil
	})
	return toErrno(f.log, "drop set-ID bits", err)
}
