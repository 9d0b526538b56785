package access

import (
	"os"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func TestWithoutPrivsAsLinux(t *testing.T) {
	const reg = syscall.S_IFREG
	self := &fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 1000}, Pid: uint32(os.Getpid())}
	outsider := &fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 1000}} // no pid to read groups of
	for _, c := range []struct {
		name      string
		mode, gid uint32
		caller    *fuse.Caller
		want      uint32
	}{
		{"suid goes", reg | 0o4755, 0, outsider, reg | 0o755},
		{"sgid with group exec goes", reg | 0o6777, 1000, self, reg | 0o777},
		{"sgid without group exec stays in the group", reg | 0o2766, 1000, self, reg | 0o2766},
		{"sgid without group exec goes outside it", reg | 0o2766, 50, outsider, reg | 0o766},
		{"root keeps sgid without group exec", reg | 0o2766, 50, &fuse.Caller{}, reg | 0o2766},
		{"a folder keeps its bits", syscall.S_IFDIR | 0o2777, 50, outsider, syscall.S_IFDIR | 0o2777},
		{"no bits, no change", reg | 0o644, 0, outsider, reg | 0o644},
	} {
		if got := WithoutPrivs(c.mode, c.gid, c.caller); got != c.want {
			t.Errorf("%s: %o gives %o, want %o", c.name, c.mode, got, c.want)
		}
	}
}

// The kernel names only the primary group: the others are read from the
// caller's /proc status.
func TestInGroupReadsSupplementaryGroups(t *testing.T) {
	groups, err := os.Getgroups()
	if err != nil || len(groups) == 0 {
		t.Skip("no supplementary groups to find")
	}
	caller := &fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 4242424}, Pid: uint32(os.Getpid())}
	if !InGroup(caller, uint32(groups[len(groups)-1])) {
		t.Errorf("group %d of this process not found", groups[len(groups)-1])
	}
	if InGroup(caller, 4242423) {
		t.Error("a group the process is not in was found")
	}
}
