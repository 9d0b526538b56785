package writes

import (
	"bytes"
	"context"
	"os"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
	"golang.org/x/sys/unix"
)

// kernelWrite writes p at off into the backing file as the kernel does,
// past the daemon.
func kernelWrite(t *testing.T, b *Backed, p []byte, off int64) {
	t.Helper()
	if _, err := unix.Pwrite(b.Fd(), p, off); err != nil {
		t.Fatal(err)
	}
}

// recorded is the inode's record, which must name content that reads want.
func recorded(t *testing.T, s *store.Store, ino uint64, want []byte) *meta.Inode {
	t.Helper()
	in, err := s.Namespace().GetInode(ino)
	if err != nil {
		t.Fatal(err)
	}
	got := storetest.ReadAll(t, s, &in.Content)
	if !bytes.Equal(got, want) {
		t.Fatalf("the record names %d bytes, not the %d written", len(got), len(want))
	}
	return in
}

// A backing file's commits stage it once and then record its new length in
// place; while the kernel may write it (until Close), the settler leaves it
// alone, even asked to settle it now; after Close it is chunked.
func TestBackedFileCommitsInPlace(t *testing.T) {
	s, w := openPath(t)
	in, _ := newFile(t, s, w, "f")
	b, err := w.NewBacked(in.Ino, "f")
	if err != nil {
		t.Fatal(err)
	}
	first := storetest.Random(5, 3<<20)
	kernelWrite(t, b, first, 0)
	c, _, err := b.Commit(context.Background(), false)
	if err != nil || c.Staged == 0 || c.Size != int64(len(first)) {
		t.Fatalf("first commit: %+v, %v", c, err)
	}
	recorded(t, s, in.Ino, first)

	more := storetest.Random(6, 1<<20)
	kernelWrite(t, b, more, int64(len(first)))
	kernelWrite(t, b, []byte("head"), 0) // in place, as a local file takes it
	want := append(append([]byte("head"), first[4:]...), more...)
	c2, _, err := b.Commit(context.Background(), false)
	if err != nil || c2.Staged != c.Staged {
		t.Fatalf("second commit staged %+v (first %+v): %v", c2, c, err)
	}
	if size, err := b.Size(); err != nil || size != int64(len(want)) {
		t.Fatalf("size %d, %v", size, err)
	}
	if err := w.SettleNow(recorded(t, s, in.Ino, want)); err != nil {
		t.Fatal(err)
	}
	if rec := recorded(t, s, in.Ino, want); rec.Content.Staged != c.Staged {
		t.Fatal("the settler took a backing file the kernel may still write")
	}

	// A cut below what the record names is recorded before the file is cut.
	if err := b.Truncate(context.Background(), 10, false); err != nil {
		t.Fatal(err)
	}
	recorded(t, s, in.Ino, want[:10])
	if err := b.Truncate(context.Background(), 20, false); err != nil {
		t.Fatal(err)
	}
	if rec := recorded(t, s, in.Ino, want[:10]); rec.Content.Size != 10 {
		t.Fatalf("a growing truncate recorded %d bytes before the commit", rec.Content.Size)
	}
	if err := b.SetMtime(1_600_000_000_000_000_000); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Commit(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	final := append(append([]byte(nil), want[:10]...), make([]byte, 10)...)
	if rec := recorded(t, s, in.Ino, final); rec.Mtime != 1_600_000_000_000_000_000 {
		t.Fatalf("mtime %d, not the one set", rec.Mtime)
	}

	b.Close(false)
	if err := w.SettleNow(recorded(t, s, in.Ino, final)); err != nil {
		t.Fatal(err)
	}
	if rec := recorded(t, s, in.Ino, final); rec.Content.Staged != 0 {
		t.Fatal("closed, the backing file was not chunked")
	}
}

// A backing file never committed, or whose file was unlinked, leaves
// nothing behind once closed.
func TestBackedFileGoneLeavesNothing(t *testing.T) {
	s, w := openPath(t)
	in, _ := newFile(t, s, w, "f")
	b, err := w.NewBacked(in.Ino, "f")
	if err != nil {
		t.Fatal(err)
	}
	kernelWrite(t, b, []byte("never committed"), 0)
	b.Close(false)
	if entries, _ := os.ReadDir(s.DraftsDir()); len(entries) != 0 {
		t.Fatalf("a backing file never committed stayed: %v", entries)
	}

	b, err = w.NewBacked(in.Ino, "f")
	if err != nil {
		t.Fatal(err)
	}
	kernelWrite(t, b, []byte("committed"), 0)
	c, _, err := b.Commit(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Namespace().Remove(meta.RootIno, "f", false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Commit(context.Background(), false); err == nil {
		t.Fatal("a commit to a record gone without an unlink succeeded")
	}
	if _, r, err := b.Commit(context.Background(), true); err != nil || r == nil {
		t.Fatalf("a commit of an unlinked file: %v", err)
	}
	b.Close(true)
	if _, err := os.Stat(s.StagedPath(c.Staged)); !os.IsNotExist(err) {
		t.Fatalf("the staged file of an unlinked backing file stayed: %v", err)
	}
	if _, err := s.Namespace().GetInode(in.Ino); err == nil || !isNotExist(err) {
		t.Fatalf("the record came back: %v", err)
	}
}

func isNotExist(err error) bool { return err == syscall.ENOENT || os.IsNotExist(err) }
