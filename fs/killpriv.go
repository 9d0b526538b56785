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
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// withoutPrivs is the mode of a file of group gid once caller's write,
// truncate or chown has dropped its privileges, as Linux's VFS drops them
// (setattr_should_drop_suidgid): set-user-ID always goes; set-group-ID
// goes with group execute, and without it (where it marks mandatory
// locking) only for a caller outside the group. Only regular files lose
// them.
func withoutPrivs(mode, gid uint32, caller *fuse.Caller) uint32 {
	if mode&syscall.S_IFMT != syscall.S_IFREG {
		return mode
	}
	mode &^= syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&syscall.S_IXGRP != 0 || !inGroup(caller, gid)) {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// inGroup says whether caller is in group gid, or root. The kernel sends
// only the primary group: the others are read from the caller's
// /proc/PID/status, in the rare case they matter. A caller that cannot be
// read (gone already) is taken as outside, which drops the bit.
func inGroup(caller *fuse.Caller, gid uint32) bool {
	if caller.Uid == 0 || caller.Gid == gid {
		return true
	}
	if caller.Pid == 0 {
		return false
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", caller.Pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if groups, ok := strings.CutPrefix(line, "Groups:"); ok {
			return slices.Contains(strings.Fields(groups), strconv.FormatUint(uint64(gid), 10))
		}
	}
	return false
}

// dropPrivs applies withoutPrivs to inode ino's record for caller,
// writing it only if that changes it.
func (f *FS) dropPrivs(ino uint64, caller *fuse.Caller) error {
	ns := f.store.Namespace()
	rec, err := ns.GetInode(ino)
	if err != nil || withoutPrivs(rec.Mode, rec.Gid, caller) == rec.Mode {
		return err
	}
	_, err = ns.Update(ino, func(rec *meta.Inode) error {
		rec.Mode = withoutPrivs(rec.Mode, rec.Gid, caller)
		rec.Ctime = now()
		return nil
	})
	return err
}

// privDropper sees the flags the node API does not pass on (a write's and
// an open's) and drops the file's privileges before the request is
// served. A truncate's and a chown's come to setattr (applyAttr).
type privDropper struct {
	fuse.RawFileSystem
	fsys   *FS
	server *fuse.Server // set before it serves
}

// dropFor drops the privileges of the node a request is for.
func (p *privDropper) dropFor(cancel <-chan struct{}, h *fuse.InHeader) fuse.Status {
	var out fuse.AttrOut // the node's inode number, as Getattr reports it
	if st := p.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: *h}, &out); !st.Ok() {
		return st
	}
	if out.Mode&(syscall.S_ISUID|syscall.S_ISGID) == 0 {
		return fuse.OK
	}
	if err := p.fsys.dropPrivs(out.Ino, &h.Caller); err != nil {
		return fuse.Status(toErrno(p.fsys.log, "drop set-ID bits", err))
	}
	// No reply to an OPEN or a WRITE carries the new mode, and the kernel
	// keeps the old one for the attribute timeout: it drops it now (the
	// attributes only, which takes no lock the request holds).
	p.server.InodeNotify(h.NodeId, -1, 0)
	return fuse.OK
}

func (p *privDropper) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		if st := p.dropFor(cancel, &in.InHeader); !st.Ok() {
			return st
		}
	}
	return p.RawFileSystem.Open(cancel, in, out)
}

func (p *privDropper) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := p.dropFor(cancel, &in.InHeader); !st.Ok() {
			return 0, st
		}
	}
	return p.RawFileSystem.Write(cancel, in, data)
}

func (p *privDropper) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := p.dropFor(cancel, &in.InHeader); !st.Ok() {
			return 0, st
		}
	}
	return p.RawFileSystem.Writev(cancel, in, data)
}
