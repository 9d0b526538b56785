// Package access is who may read a read-only node of a view, and the
// kernel's rule for whether a caller may: a view is exactly as private as
// its source. And the set-ID bits a caller's change drops, as the kernel
// would.
package access

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Rights are who may read a read-only node of a view: an owner, a group
// and permission bits, never write bits. With --allow-other the kernel
// checks them (default_permissions), so a view of a 0700 folder or of 0600
// weights must not be 0555 root.
type Rights struct {
	Uid, Gid, Perm uint32
}

// Permission bits a check asks for.
const (
	Read   = 4
	Search = 1
)

// Of is a stored file's or folder's rights, minus write and the set-id
// and sticky bits.
func Of(in *meta.Inode) Rights {
	return Rights{Uid: in.Uid, Gid: in.Gid, Perm: in.Mode & 0o555}
}

// OfWeights is the rights of a view file drawn from weight files: for
// each class of user it names, no more than every source grants any user
// of that class. Where owners differ, root owns it, and a user of its group
// or others may own a source; where groups differ, its group is root's and
// gets what others get, and any of its users may be in a source's group.
func OfWeights(weights []*meta.Inode) Rights {
	out := Of(weights[0])
	sameOwner, sameGroup := true, true
	for _, in := range weights[1:] {
		sameOwner = sameOwner && in.Uid == out.Uid
		sameGroup = sameGroup && in.Gid == out.Gid
	}
	owner, group, other := uint32(5), uint32(5), uint32(5)
	for _, in := range weights {
		a := Of(in)
		o, g, x := a.Perm>>6, a.Perm>>3&7, a.Perm&7
		if !sameOwner {
			g, x = g&o, x&o
		}
		if !sameGroup {
			x &= g
		}
		owner, group, other = owner&o, group&g, other&x
	}
	if !sameOwner {
		out.Uid = 0
	}
	if !sameGroup {
		out.Gid, group = 0, other
	}
	out.Perm = owner<<6 | group<<3 | other
	return out
}

// Permits reports whether the caller of ctx may do want (Read, Search)
// under r, as the kernel decides: root may; else the owner's
// bits apply to the owner, the group's to its members, the others' to the
// rest. FUSE requests carry only the caller's primary group: its other
// groups are read from /proc when they make a difference.
func (r Rights) Permits(ctx context.Context, want uint32) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return false
	}
	bits := r.Perm
	switch {
	case c.Uid == 0:
		return true
	case c.Uid == r.Uid:
		bits >>= 6
	case bits>>3&want != bits&want && InGroup(c, r.Gid):
		bits >>= 3
	}
	return bits&want == want
}

// InGroup says whether caller is in group gid, or root. The kernel sends
// only the primary group: the others are read from the caller's
// /proc/PID/status, in the rare case they matter. A caller that cannot be
// read (gone already) is taken as outside.
func InGroup(caller *fuse.Caller, gid uint32) bool {
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

// WithoutPrivs is the mode of a file of group gid once caller's write,
// truncate or chown has dropped its privileges, as Linux's VFS drops them
// (setattr_should_drop_suidgid): set-user-ID always goes; set-group-ID
// goes with group execute, and without it (where it marks mandatory
// locking) only for a caller outside the group, which a caller that
// cannot be read is taken to be. Only regular files lose them.
func WithoutPrivs(mode, gid uint32, caller *fuse.Caller) uint32 {
	if mode&syscall.S_IFMT != syscall.S_IFREG {
		return mode
	}
	mode &^= syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&syscall.S_IXGRP != 0 || !InGroup(caller, gid)) {
		mode &^= syscall.S_ISGID
	}
	return mode
}
