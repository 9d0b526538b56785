package store

import (
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
)

// What each checkpoint holds, kept from the changes once counted, is what
// a walk counts, through creates, rewrites, hard links, renames of files
// and folders between checkpoints, a checkpoint moved into another, and
// removals.
func TestCheckpointTotalsFollowChanges(t *testing.T) {
	s := openReclaiming(t)
	ns := s.ns
	mkdir := func(parent uint64, name string) *meta.Inode {
		in, err := ns.Create(parent, name, meta.Inode{Mode: syscall.S_IFDIR | 0o755})
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	a, b := mkdir(meta.RootIno, "a"), mkdir(meta.RootIno, "b")
	sub := mkdir(a.Ino, "sub")
	addFile(t, s, "top", random(1, 1000)) // a file checkpoint
	put := func(parent uint64, name string, n int) *meta.Inode {
		c := addFile(t, s, "tmp", random(int64(n), n))
		if err := ns.Rename(meta.RootIno, "tmp", parent, name, 0); err != nil {
			t.Fatal(err)
		}
		in, _ := ns.Lookup(parent, name)
		if in.Content.Size != c.Size {
			t.Fatal("the file moved lost its content")
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
			walked, err := s.countNow(e.Ino)
			if err != nil {
				t.Fatal(err)
			}
			if kept != walked {
				t.Fatalf("%s: %s holds %+v, a walk counts %+v", step, e.Name, kept, walked)
			}
		}
	}
	check("counted when asked")
	reclaim(t, s) // the first pass counts again, with the references
	check("counted by the first pass")
	put(a.Ino, "w", 50)
	check("a file added")
	smaller := addFile(t, s, "smaller", random(9, 7))
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

// countNow counts what checkpoint ino holds by walking it.
func (s *Store) countNow(ino uint64) (Totals, error) {
	t := newTotals()
	err := s.ns.Snapshot(func(snap *meta.Namespace) error { return t.count(snap, ino) })
	if err != nil {
		return Totals{}, err
	}
	return *t.sums[ino], nil
}
