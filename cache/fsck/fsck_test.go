package fsck

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
	"github.com/ckptfs/ckptfs/cache/versions"
	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// A store as written, and after gc, checks clean; a flipped byte in a pack
// is reported with the file that uses the chunk.
func TestDamagedChunkNamesItsFile(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	storetest.AddFile(t, s, "keep", storetest.Random(1, 100000))
	storetest.AddFile(t, s, "drop", storetest.Random(2, 100000))
	if err := s.Namespace().Remove(meta.RootIno, "drop", false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Store(s); err != nil || len(rep.Problems) > 0 || rep.Files != 1 || rep.Chunks == 0 {
		t.Fatalf("check of a sound store: %+v %v", rep, err)
	}
	packs, err := s.Packs()
	if err != nil || len(packs) != 1 {
		t.Fatalf("packs %v: %v", packs, err)
	}
	f, err := os.OpenFile(packs[0].Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, packs[0].Size/2)
	f.WriteAt([]byte{b[0] ^ 0x40}, packs[0].Size/2)
	f.Close()
	rep, err := Store(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "used by keep") {
		t.Fatalf("problems %q", rep.Problems)
	}
}

// Every damaged record is reported in one pass, and what lies below a
// damaged directory is still reached.
func TestEveryProblemInOnePass(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	dir, _ := s.Namespace().Create(meta.RootIno, "a", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	inner, _ := s.Namespace().Create(dir.Ino, "inner.txt", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	b, _ := s.Namespace().Create(meta.RootIno, "b", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	file, _ := s.Namespace().Create(b.Ino, "f.txt", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	for _, ino := range []uint64{dir.Ino, file.Ino} {
		if err := s.Namespace().SetValue(string(meta.InodeKey(ino)), []byte{99, 1, 2}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Store(s)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(rep.Problems, "\n")
	if len(rep.Problems) != 2 || !strings.Contains(joined, "a: inode") || !strings.Contains(joined, "b/f.txt: inode") {
		t.Fatalf("problems %q", rep.Problems)
	}
	if strings.Contains(joined, "not reachable") {
		t.Fatalf("inode %d below the damaged directory reported unreachable: %q", inner.Ino, rep.Problems)
	}
}

// A store whose older version is stored as deltas checks clean; a damaged
// reference is reported for itself and for each chunk stored as a delta
// against it, with the files that use them.
func TestDeltaChainsAreChecked(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	run := layouttest.TrainingRun(1, 2, 2, 30_000, 1e-4)
	older := storetest.AddFile(t, s, "older", run[0])
	newer := storetest.AddFile(t, s, "newer", run[1])
	if res, err := s.StoreAsDeltas(context.Background(), versions.Pairs(older, newer)); err != nil || res.Stored != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	if rep, err := Store(s); err != nil || len(rep.Problems) > 0 {
		t.Fatalf("check of a sound store: %+v %v", rep, err)
	}
	hurt := newer.Chunks[1].Hash
	var at pack.Loc
	s.ScanChunks(func(h chunk.Hash, loc pack.Loc, _ error) error {
		if h == hurt {
			at = loc
		}
		return nil
	})
	packs, _ := s.Packs()
	var file string
	for _, p := range packs {
		if p.ID == at.Pack {
			file = p.Path
		}
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	off := at.Offset + pack.RecordHeader + int64(at.Len) - 1
	b := make([]byte, 1)
	f.ReadAt(b, off)
	f.WriteAt([]byte{b[0] ^ 0x40}, off)
	f.Close()
	rep, err := Store(s)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"chunk " + hurt.String() + " (used by newer)", "chunk " + older.Chunks[1].Hash.String() + " (used by older)"}
	if len(rep.Problems) != 2 {
		t.Fatalf("problems %q, want 2", rep.Problems)
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(rep.Problems, "\n"), w) {
			t.Errorf("no problem says %q: %q", w, rep.Problems)
		}
	}
}
