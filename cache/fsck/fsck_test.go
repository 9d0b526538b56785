package fsck

import (
	"bytes"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
)

func openTemp(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// addFile stores data as file name in the root.
func addFile(t *testing.T, s *store.Store, name string, data []byte) {
	t.Helper()
	c, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Namespace().Create(meta.RootIno, name, meta.Inode{Mode: syscall.S_IFREG | 0o644, Content: *c}); err != nil {
		t.Fatal(err)
	}
}

// A store as written, and after gc, checks clean; a flipped byte in a pack
// is reported with the file that uses the chunk.
func TestDamagedChunkNamesItsFile(t *testing.T) {
	s := openTemp(t)
	addFile(t, s, "keep", storetest.Random(1, 100000))
	addFile(t, s, "drop", storetest.Random(2, 100000))
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
	s := openTemp(t)
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
