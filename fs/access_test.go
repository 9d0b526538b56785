package fs

import (
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
)

// For every class of user, a view file grants no more than every source
// grants any user of that class, whoever owns and groups the sources.
func TestWeightsAccessTakesWhatEverySourceAllows(t *testing.T) {
	type src struct{ uid, gid, mode uint32 }
	for _, tc := range []struct {
		sources []src
		want    access
	}{
		{[]src{{1000, 100, 0o755}}, access{1000, 100, 0o555}},
		{[]src{{1000, 100, 0o604}}, access{1000, 100, 0o404}},
		{[]src{{1000, 100, 0o555}, {1000, 100, 0o500}}, access{1000, 100, 0o500}},
		{[]src{{1000, 100, 0o444}, {2000, 100, 0o444}}, access{0, 100, 0o444}},
		{[]src{{1000, 100, 0o555}, {1000, 200, 0o554}}, access{1000, 0, 0o544}},
		{[]src{{1000, 100, 0o550}, {1000, 200, 0o550}}, access{1000, 0, 0o500}},
		// A 0604 source denies its group: where groups differ, the view's
		// others may be in that group.
		{[]src{{0, 65534, 0o604}, {0, 0, 0o644}}, access{0, 0, 0o400}},
		{[]src{{0, 65534, 0o644}, {0, 0, 0o644}}, access{0, 0, 0o444}},
		// A 0044 source denies its owner: where owners differ, the view's
		// group and others may own it.
		{[]src{{1000, 100, 0o044}, {2000, 100, 0o444}}, access{0, 100, 0o000}},
		{[]src{{1000, 100, 0o044}, {1000, 100, 0o444}}, access{1000, 100, 0o044}},
	} {
		var records []*meta.Inode
		for _, s := range tc.sources {
			records = append(records, &meta.Inode{Uid: s.uid, Gid: s.gid, Mode: s.mode})
		}
		if got := weightsAccess(records); got != tc.want {
			t.Errorf("sources %o: %+v (perm %o), want %+v (perm %o)", tc.sources, got, got.perm, tc.want, tc.want.perm)
		}
	}
}
