// Package access is who may read a read-only node of a view, and the
// kernel's rule for whether a caller may: a view is exactly as private as
// its source.
package access

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

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
	case bits>>3&want != bits&want && (c.Gid == r.Gid || inGroup(c.Pid, r.Gid)):
		bits >>= 3
	}
	return bits&want == want
}

// inGroup reports whether process pid has gid among its supplementary
// groups; false when it cannot be told (the process is gone).
func inGroup(pid, gid uint32) bool {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if groups, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(groups) {
				if g == strconv.FormatUint(uint64(gid), 10) {
					return true
				}
			}
			return false
		}
	}
	return false
}
