package fs

import "github.com/ckptfs/ckptfs/cache/meta"

// access is who may read a read-only node of a view: an owner, a group
// and permission bits, never write bits. A view is exactly as private as
// its source: with --allow-other the kernel checks these (default_permissions),
// so a view of a 0700 folder or of 0600 weights must not be 0555 root.
type access struct {
	uid, gid, perm uint32
}

// accessOf is a stored file's or folder's access, minus write and the
// set-id and sticky bits.
func accessOf(in *meta.Inode) access {
	return access{uid: in.Uid, gid: in.Gid, perm: in.Mode & 0o555}
}

// restrict combines the access of two sources of one view file: the bits
// both allow. Where owners differ, root owns it; where groups differ, the
// group gets only what others get.
func (a access) restrict(b access) access {
	out := access{uid: a.uid, gid: a.gid, perm: a.perm & b.perm}
	if a.uid != b.uid {
		out.uid = 0
	}
	if a.gid != b.gid {
		out.gid = 0
		out.perm = out.perm&^0o070 | (out.perm&0o007)<<3
	}
	return out
}

// weightsAccess is the access of a view file drawn from weight files: the
// most restrictive of theirs.
func weightsAccess(weights []*meta.Inode) access {
	acc := accessOf(weights[0])
	for _, in := range weights[1:] {
		acc = acc.restrict(accessOf(in))
	}
	return acc
}
