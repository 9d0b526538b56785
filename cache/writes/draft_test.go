package writes

import (
	"bytes"
	"context"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
)

// newFile creates an empty file name in the root and a draft of it.
func newFile(t *testing.T, s *store.Store, w *Path, name string) (*meta.Inode, *Draft) {
	t.Helper()
	in, err := s.Namespace().Create(meta.RootIno, name, meta.Inode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	return in, w.NewDraft(in.Ino, name, &in.Content, s.NewReader(name, &in.Content))
}

// draftOf is a draft of the file's committed content.
func draftOf(t *testing.T, s *store.Store, w *Path, in *meta.Inode) *Draft {
	t.Helper()
	in, err := s.Namespace().GetInode(in.Ino)
	if err != nil {
		t.Fatal(err)
	}
	return w.NewDraft(in.Ino, "f", &in.Content, s.NewReader("f", &in.Content))
}

// commit commits d and checks the record and the reader it returns hold
// want.
func commit(t *testing.T, s *store.Store, d *Draft, in *meta.Inode, want []byte) *meta.Content {
	t.Helper()
	c, r, err := d.Commit(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want)+1)
	if n, err := r.ReadAt(got, 0); n != len(want) || !bytes.Equal(got[:n], want) || err != io.EOF {
		t.Fatalf("the committed content reads %d bytes back: %v", n, err)
	}
	rec, err := s.Namespace().GetInode(in.Ino)
	if err != nil || !rec.Content.Equal(c) {
		t.Fatalf("the record holds %+v, the commit %+v (%v)", rec.Content, c, err)
	}
	return c
}

// Not writing behind, writes in order stream into chunks, and anything
// else moves the content to a draft file, chunked at the commit: either
// way the record names durable chunks of exactly what was written.
func TestDraftsChunkBeforeTheCommitReturns(t *testing.T) {
	s := storetest.Open(t, store.Options{Mounted: true})
	w, err := Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	data := storetest.Random(1, 3<<20+5)
	in, d := newFile(t, s, w, "streamed")
	for off := 0; off < len(data); off += 1 << 20 {
		if err := d.WriteAt(data[off:min(off+1<<20, len(data))], int64(off), 0); err != nil {
			t.Fatal(err)
		}
	}
	if c := commit(t, s, d, in, data); c.Staged != 0 || len(c.Chunks) == 0 {
		t.Fatalf("streamed content %+v", c)
	}

	in, d = newFile(t, s, w, "random")
	d.WriteAt(data[1<<20:], 1<<20, 0) // the end first
	d.WriteAt(data[:1<<20], 0, 0)
	got := make([]byte, 100)
	if n, err := d.ReadAt(got, 1<<20); n != 100 || !bytes.Equal(got, data[1<<20:1<<20+100]) {
		t.Fatalf("a read of what was written: %d, %v", n, err)
	}
	if err := d.Truncate(int64(len(data)+4096), 0); err != nil { // a hole at the end
		t.Fatal(err)
	}
	want := append(append([]byte(nil), data...), make([]byte, 4096)...)
	if c := commit(t, s, d, in, want); c.Staged != 0 {
		t.Fatalf("random writes not chunked: %+v", c)
	}
	if left := stagedNames(t, s); len(left) != 0 {
		t.Fatalf("staged files %v with the path not behind", left)
	}
}

// Writing behind, a commit stages the draft file; a later draft of the
// file appends to its staged file in place, and one that changes what the
// record names copies it first, leaving the staged file as it was.
func TestDraftsWriteBehind(t *testing.T) {
	s, w := openPath(t)
	first := storetest.Random(2, 1<<20)
	in, d := newFile(t, s, w, "f")
	if err := d.WriteAt(first, 0, 0); err != nil {
		t.Fatal(err)
	}
	c := commit(t, s, d, in, first)
	if c.Staged == 0 {
		t.Fatalf("not staged: %+v", c)
	}
	before := s.NewReader("f", c)

	more := storetest.Random(3, 64<<10)
	d = draftOf(t, s, w, in)
	if err := d.WriteAt(more, int64(len(first)), 0); err != nil {
		t.Fatal(err)
	}
	if !d.appending {
		t.Fatal("an append to staged content did not go in place")
	}
	appended := append(append([]byte(nil), first...), more...)
	c2 := commit(t, s, d, in, appended)
	if c2.Staged != c.Staged {
		t.Fatalf("an append staged a copy: %d, then %d", c.Staged, c2.Staged)
	}

	d = draftOf(t, s, w, in)
	d.WriteAt(more, int64(len(appended)), 0) // in place, then an overwrite of what the record names
	if err := d.WriteAt([]byte("head"), 0, 0); err != nil {
		t.Fatal(err)
	}
	if d.appending {
		t.Fatal("an overwrite went in place")
	}
	want := append(append([]byte("head"), appended[4:]...), more...)
	c3 := commit(t, s, d, in, want)
	if c3.Staged == c.Staged {
		t.Fatal("an overwrite changed the staged file in place")
	}
	got := make([]byte, len(first)+1)
	if n, _ := before.ReadAt(got, 0); n != len(first) || !bytes.Equal(got[:n], first) {
		t.Fatal("a reader of the first version reads other bytes")
	}
	if err := s.CheckStaged(c2); err != nil {
		t.Fatalf("the staged file of the second version: %v", err)
	}

	d = draftOf(t, s, w, in)
	if err := d.Truncate(0, 0); err != nil {
		t.Fatal(err)
	}
	d.WriteAt([]byte("new"), 0, 0)
	commit(t, s, d, in, []byte("new"))
}

// A file unlinked while it was written takes nothing: the commit hands its
// content to the handles still open and its staged file goes at once. A
// record gone without an unlink (replaced from a bucket) is an error, not
// a silent success.
func TestDraftOfAFileGone(t *testing.T) {
	s, w := openPath(t)
	data := storetest.Random(4, 100<<10)
	_, d := newFile(t, s, w, "gone")
	d.WriteAt(data, 0, 0)
	if err := s.Namespace().Remove(meta.RootIno, "gone", false); err != nil {
		t.Fatal(err)
	}
	c, r, err := d.Commit(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if n, _ := r.ReadAt(got, 0); n != len(data) || !bytes.Equal(got, data) {
		t.Fatal("the handles of an unlinked file do not read what was written")
	}
	if err := s.CheckStaged(c); err == nil {
		t.Fatal("the staged file of an unlinked file stayed")
	}
	if w.settler.backlog.Load() != 0 {
		t.Fatalf("backlog %d after the unlinked file's staged file went", w.settler.backlog.Load())
	}

	_, d = newFile(t, s, w, "replaced")
	d.WriteAt(data, 0, 0)
	s.Namespace().Remove(meta.RootIno, "replaced", false) // as a refresh from a bucket does
	if _, _, err := d.Commit(context.Background(), false); !errors.Is(err, ErrReplaced) {
		t.Fatalf("commit to a record replaced under the writer: %v", err)
	}
}

// A write that would leave no room to settle what is staged fails with
// ENOSPC, and the draft keeps what it had.
func TestDraftWriteFailsWhenTheDiskIsFull(t *testing.T) {
	s, w := openPath(t)
	in, d := newFile(t, s, w, "f")
	d.WriteAt([]byte("kept"), 0, 0)
	var st syscall.Statfs_t
	syscall.Statfs(s.Dir(), &st)
	w.settler.backlog.Store(int64(st.Bavail) * st.Bsize)
	if err := d.WriteAt(make([]byte, 1<<20), 4, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a write with no room: %v", err)
	}
	w.settler.backlog.Store(0)
	commit(t, s, d, in, []byte("kept"))
}
