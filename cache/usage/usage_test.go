package usage_test

import (
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
	"github.com/ckptfs/ckptfs/cache/usage"
)

// walked counts what checkpoint ino holds by walking it: the reference.
func walked(t *testing.T, ns *meta.Namespace, ino uint64) usage.Totals {
	t.Helper()
	var sum usage.Totals
	seen := map[uint64]bool{}
	add := func(in *meta.Inode) {
		if in.Mode&syscall.S_IFMT == syscall.S_IFREG && !seen[in.Ino] {
			seen[in.Ino] = true
			sum.Files++
			sum.Bytes += in.Content.Size
		}
	}
	in, err := ns.GetInode(ino)
	if err != nil {
		t.Fatal(err)
	}
	add(in)
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if err := ns.Walk(ino, func(_ string, in *meta.Inode) error { add(in); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return sum
}

// What each checkpoint holds, kept from the changes once counted, is what
// a walk counts, through creates, rewrites, hard links, renames of files
// and folders between checkpoints, a checkpoint moved into another, and
// removals; counted when first asked, or by the store's first reclaim
// pass with its references.
func TestCountsFollowChanges(t *testing.T) {
	s := storetest.Open(t, store.Options{Mounted: true})
	ns := s.Namespace()
	mkdir := func(parent uint64, name string) *meta.Inode {
		in, err := ns.Create(parent, name, meta.Inode{Mode: syscall.S_IFDIR | 0o755})
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	a, b := mkdir(meta.RootIno, "a"), mkdir(meta.RootIno, "b")
	sub := mkdir(a.Ino, "sub")
	storetest.AddFile(t, s, "top", storetest.Random(1, 1000)) // a file checkpoint
	put := func(parent uint64, name string, n int) *meta.Inode {
		storetest.AddFile(t, s, "tmp", storetest.Random(int64(n), n))
		if err := ns.Rename(meta.RootIno, "tmp", parent, name, 0); err != nil {
			t.Fatal(err)
		}
		in, err := ns.Lookup(parent, name)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	put(a.Ino, "x", 100)
	y := put(sub.Ino, "y", 200)
	put(b.Ino, "z", 300)
	check := func(step string) {
		t.Helper()
		roots, _ := ns.ReadDir(meta.RootIno)
		for _, e := range roots {
			kept, err := s.CheckpointTotals(e.Ino)
			if err != nil {
				t.Fatalf("%s: %s: %v", step, e.Name, err)
			}
			if want := walked(t, ns, e.Ino); kept != want {
				t.Fatalf("%s: %s holds %+v, a walk counts %+v", step, e.Name, kept, want)
			}
		}
	}
	check("counted when asked")
	if _, err := s.Reclaim(); err != nil { // the first pass counts again, with the references
		t.Fatal(err)
	}
	check("counted by the first reclaim pass")
	put(a.Ino, "w", 50)
	check("a file added")
	smaller := storetest.AddFile(t, s, "smaller", storetest.Random(9, 7))
	ns.Update(y.Ino, func(in *meta.Inode) error { in.Content = *smaller; return nil })
	check("a file rewritten")
	if _, err := ns.Link(y.Ino, b.Ino, "y-link"); err != nil {
		t.Fatal(err)
	}
	check("a hard link into another checkpoint")
	if err := ns.Rename(a.Ino, "x", b.Ino, "x", 0); err != nil {
		t.Fatal(err)
	}
	check("a file moved between checkpoints")
	if err := ns.Rename(a.Ino, "sub", b.Ino, "sub", 0); err != nil {
		t.Fatal(err)
	}
	check("a folder moved between checkpoints")
	if err := ns.Rename(meta.RootIno, "a", b.Ino, "a", 0); err != nil {
		t.Fatal(err)
	}
	check("a checkpoint moved into another")
	if err := ns.Rename(b.Ino, "sub", meta.RootIno, "sub", 0); err != nil {
		t.Fatal(err)
	}
	check("a folder moved out to be a checkpoint")
	if err := ns.Remove(b.Ino, "y-link", false); err != nil {
		t.Fatal(err)
	}
	if err := ns.RemoveAll(meta.RootIno, "sub"); err != nil {
		t.Fatal(err)
	}
	check("removals")
}
