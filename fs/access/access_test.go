package access

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// For every class of user, a view file grants no more than every source
// grants any user of that class, whoever owns and groups the sources.
func TestWeightsAccessTakesWhatEverySourceAllows(t *testing.T) {
	type src struct{ uid, gid, mode uint32 }
	for _, tc := range []struct {
		sources []src
		want    Rights
	}{
		{[]src{{1000, 100, 0o755}}, Rights{1000, 100, 0o555}},
		{[]src{{1000, 100, 0o604}}, Rights{1000, 100, 0o404}},
		{[]src{{1000, 100, 0o555}, {1000, 100, 0o500}}, Rights{1000, 100, 0o500}},
		{[]src{{1000, 100, 0o444}, {2000, 100, 0o444}}, Rights{0, 100, 0o444}},
		{[]src{{1000, 100, 0o555}, {1000, 200, 0o554}}, Rights{1000, 0, 0o544}},
		{[]src{{1000, 100, 0o550}, {1000, 200, 0o550}}, Rights{1000, 0, 0o500}},
		// A 0604 source denies its group: where groups differ, the view's
		// others may be in that group.
		{[]src{{0, 65534, 0o604}, {0, 0, 0o644}}, Rights{0, 0, 0o400}},
		{[]src{{0, 65534, 0o644}, {0, 0, 0o644}}, Rights{0, 0, 0o444}},
		// A 0044 source denies its owner: where owners differ, the view's
		// group and others may own it.
		{[]src{{1000, 100, 0o044}, {2000, 100, 0o444}}, Rights{0, 100, 0o000}},
		{[]src{{1000, 100, 0o044}, {1000, 100, 0o444}}, Rights{1000, 100, 0o044}},
	} {
		var records []*meta.Inode
		for _, s := range tc.sources {
			records = append(records, &meta.Inode{Uid: s.uid, Gid: s.gid, Mode: s.mode})
		}
		if got := OfWeights(records); got != tc.want {
			t.Errorf("sources %o: %+v (perm %o), want %+v (perm %o)", tc.sources, got, got.Perm, tc.want, tc.want.Perm)
		}
	}
}

// permits decides as the kernel does: root may; the owner's bits, else the
// group's for a member (its supplementary groups read from /proc), else
// the others'.
func TestPermitsAsTheKernel(t *testing.T) {
	caller := func(uid, gid uint32) context.Context {
		return &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: gid}, Pid: uint32(os.Getpid())}}
	}
	a := Rights{Uid: 1000, Gid: 100, Perm: 0o504}
	for _, tc := range []struct {
		ctx  context.Context
		want uint32
		ok   bool
	}{
		{caller(0, 0), Read, true},
		{caller(1000, 5), Read | Search, true},
		{caller(2000, 100), Read, false}, // the group's bits, though others may read
		{caller(2000, 5), Read, true},
		{caller(2000, 5), Search, false},
		{context.Background(), Read, false},
	} {
		if got := a.Permits(tc.ctx, tc.want); got != tc.ok {
			t.Errorf("%+v asking %o: %v, want %v", tc.ctx, tc.want, got, tc.ok)
		}
	}
	// A process in group 4242 only through its supplementary groups.
	if os.Geteuid() != 0 {
		t.Log("not root: the supplementary groups are not checked")
		return
	}
	member := exec.Command("sleep", "60")
	member.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 2000, Gid: 5, Groups: []uint32{4242}}}
	if err := member.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { member.Process.Kill(); member.Wait() }()
	ctx := &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: 2000, Gid: 5}, Pid: uint32(member.Process.Pid)}}
	if !(Rights{Uid: 1000, Gid: 4242, Perm: 0o050}).Permits(ctx, Read|Search) {
		t.Error("a member through a supplementary group is refused")
	}
	if (Rights{Uid: 1000, Gid: 4243, Perm: 0o050}).Permits(ctx, Read) {
		t.Error("a caller outside the group gets the group's bits")
	}
}
