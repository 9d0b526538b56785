package store

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// stageFile commits data as the staged content of a new file name.
func stageFile(t *testing.T, s *Store, name string, data []byte) *meta.Inode {
	t.Helper()
	f, err := os.CreateTemp(s.StagingDir(), "write-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	c, err := s.Stage(f, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	in, err := s.ns.Lookup(meta.RootIno, name)
	if err != nil {
		in, err = s.ns.Create(meta.RootIno, name, meta.Inode{Mode: syscall.S_IFREG | 0o644})
	}
	if err != nil {
		t.Fatal(err)
	}
	in, err = s.ns.Update(in.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func stagedNames(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.StagedDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// Staged content reads as written at once; settling swaps the record to
// chunks of the same bytes, a reader opened before still reads after the
// file is gone, and staged files nobody holds (rewritten, removed) are
// dropped unread.
func TestStagedFilesSettleToChunks(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CacheBytes: 8 << 20, Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.settler.stop() // settled by hand below
	data := safetensorsBytes(layouttest.Random(5, 2<<20+7), layouttest.Random(6, 1000))
	a := stageFile(t, s, "a.safetensors", data)
	if a.Content.Staged == 0 || len(a.Content.Chunks) != 0 {
		t.Fatalf("staged record holds %+v", a.Content)
	}
	before := s.NewReader("a", &a.Content)
	if !bytes.Equal(readAll(t, s, &a.Content), data) {
		t.Fatal("staged content reads differently")
	}
	stageFile(t, s, "b", []byte("old"))
	stageFile(t, s, "b", []byte("new bytes")) // the first is nobody's
	c := stageFile(t, s, "c", []byte("removed before it settled"))
	if err := s.ns.Remove(meta.RootIno, "c", false); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckStaged(&c.Content); err != nil {
		t.Fatal(err)
	}
	if _, err := s.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.settler.removeDoomed(0); err != nil {
		t.Fatal(err)
	}
	if left := stagedNames(t, s); len(left) != 0 {
		t.Fatalf("staged files left after settling: %v", left)
	}
	a, _ = s.ns.Lookup(meta.RootIno, "a.safetensors")
	if a.Content.Staged != 0 || a.Content.Kind != meta.KindSafetensors || len(a.Content.Chunks) < 3 {
		t.Fatalf("settled record holds %+v", a.Content)
	}
	if !bytes.Equal(readAll(t, s, &a.Content), data) {
		t.Fatal("settled content reads differently")
	}
	got := make([]byte, len(data))
	if n, err := before.ReadAt(got, 0); n != len(data) || !bytes.Equal(got, data) {
		t.Fatalf("a reader of the staged file after it went: %d, %v", n, err)
	}
	b, _ := s.ns.Lookup(meta.RootIno, "b")
	if string(readAll(t, s, &b.Content)) != "new bytes" {
		t.Fatal("b lost its last write")
	}
	if err := s.CheckStaged(&c.Content); err == nil {
		t.Fatal("fsck's check passed a staged file that is gone")
	}
}

// The settler leaves young staged files for later and says when, but drops
// a young one nobody holds at once: rotated checkpoints are never chunked.
func TestYoungStagedFilesWait(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.settler.stop()
	kept := stageFile(t, s, "kept", []byte("young"))
	stageFile(t, s, "rotated", []byte("young too"))
	if err := s.ns.Remove(meta.RootIno, "rotated", false); err != nil {
		t.Fatal(err)
	}
	after, err := s.settler.settleAll(nil, time.Hour)
	if err != nil || after <= 0 || after > time.Hour {
		t.Fatalf("settle of young files: wait %v, %v", after, err)
	}
	if in, _ := s.ns.Lookup(meta.RootIno, "kept"); in.Content.Staged != kept.Content.Staged {
		t.Fatal("a young file was chunked")
	}
	if err := s.settler.removeDoomed(time.Hour); err != nil {
		t.Fatal(err)
	}
	if left := stagedNames(t, s); len(left) != 1 {
		t.Fatalf("staged files %v, want only the kept one's", left)
	}
}

// A store opened after a crash settles what was staged, before Open
// returns unless it writes behind, and removes staged files no record
// holds.
func TestStagedFilesSurviveACrash(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	s.settler.stop()
	data := layouttest.Random(4, 3<<20)
	stageFile(t, s, "w.bin", data)
	crash(t, s)
	os.WriteFile(filepath.Join(dir, "staged", "ffff"), []byte("orphan"), 0o600)

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in, _ := s.ns.Lookup(meta.RootIno, "w.bin")
	if in.Content.Staged != 0 || !bytes.Equal(readAll(t, s, &in.Content), data) {
		t.Fatalf("after the crash: %+v", in.Content)
	}
	if err := s.settler.removeDoomed(0); err != nil {
		t.Fatal(err)
	}
	if left := stagedNames(t, s); len(left) != 0 {
		t.Fatalf("staged files left: %v", left)
	}
}

// Staged bytes not settled yet count against the free space twice.
func TestStagedBacklogIsReserved(t *testing.T) {
	s := openTemp(t)
	free, err := s.freeBytes()
	if err != nil {
		t.Fatal(err)
	}
	s.settler.backlog.Store(free) // as if a disk's worth waited to settle
	if err := s.EnsureStagingSpace(1, 0); err == nil {
		t.Fatal("a write was allowed with no room left to settle what is staged")
	}
	s.settler.backlog.Store(0)
	if err := s.EnsureStagingSpace(1, 0); err != nil {
		t.Fatal(err)
	}
}

// crash closes s as a killed process leaves it: nothing settled, the
// database and packs as they are.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.reclaimer.stop()
	s.ns.Close()
	if err := s.packs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
}
