package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// access is who may read a read-only node of a view: an owner, a group
// and permission bits, never write bits. A view is exactly as private as
// its source: with --allow-other the kernel checks these (default_permissions),
// so a view of a 0700 folder or of 0600 weights must not be 0555 root.
type access struct {
	uid, gid, perm uint32
}

// Permission bits a check asks for.
const (
	mayRead   = 4
	maySearch = 1
)

// accessOf is a stored file's or folder's access, minus write and the
// set-id and sticky bits.
func accessOf(in *meta.Inode) access {
	return access{uid: in.Uid, gid: in.Gid, perm: in.Mode & 0o555}
}

// weightsAccess is the access of a view file drawn from weight files: for
// each class of user it names, no more than every source grants any user
// of that class. Where owners differ, root owns it, and a user of its group
// or others may own a source; where groups differ, its group is root's and
// gets what others get, and any of its users may be in a source's group.
func weightsAccess(weights []*meta.Inode) access {
	out := accessOf(weights[0])
	sameOwner, sameGroup := true, true
	for _, in := range weights[1:] {
		sameOwner = sameOwner && in.Uid == out.uid
		sameGroup = sameGroup && in.Gid == out.gid
	}
	owner, group, other := uint32(5), uint32(5), uint32(5)
	for _, in := range weights {
		a := accessOf(in)
		o, g, x := a.perm>>6, a.perm>>3&7, a.perm&7
		if !sameOwner {
			g, x = g&o, x&o
		}
		if !sameGroup {
			x &= g
		}
		owner, group, other = owner&o, group&g, other&x
	}
	if !sameOwner {
		out.uid = 0
	}
	if !sameGroup {
		out.gid, group = 0, other
	}
	out.perm = owner<<6 | group<<3 | other
	return out
}

// accessNow is the access of a view file drawn from the stored files
// inos (or of a view directory, from its folder), as their records are
// now. One of them gone makes the view stale (ESTALE), which has the
// kernel look its path up again.
func (f *FS) accessNow(inos ...uint64) (access, error) {
	records := make([]*meta.Inode, len(inos))
	for i, ino := range inos {
		in, err := f.store.Namespace().GetInode(ino)
		if errors.Is(err, syscall.ENOENT) {
			return access{}, syscall.ESTALE
		}
		if err != nil {
			return access{}, err
		}
		records[i] = in
	}
	return weightsAccess(records), nil
}

// permits reports whether the caller of ctx may do want (mayRead,
// maySearch) under a, as the kernel decides: root may; else the owner's
// bits apply to the owner, the group's to its members, the others' to the
// rest. FUSE requests carry only the caller's primary group: its other
// groups are read from /proc when they make a difference.
func (a access) permits(ctx context.Context, want uint32) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return false
	}
	bits := a.perm
	switch {
	case c.Uid == 0:
		return true
	case c.Uid == a.uid:
		bits >>= 6
	case bits>>3&want != bits&want && (c.Gid == a.gid || inGroup(c.Pid, a.gid)):
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
