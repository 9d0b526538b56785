package meta

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// openTemp opens a namespace in a new database, with no hooks.
func openTemp(t *testing.T) *Namespace {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenNamespace(db, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); db.Close() })
	return s
}

// Removing a directory conflicts with a create inside it committed after
// the emptiness check, so no entry is left in a deleted directory.
func TestRemoveDirConflictsWithCreateInside(t *testing.T) {
	s := openTemp(t)
	dir, _ := s.Create(RootIno, "d", Inode{Mode: syscall.S_IFDIR | 0o755})
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	if empty, err := dirEmpty(txn, dir.Ino); err != nil || !empty {
		t.Fatalf("empty %v, %v", empty, err)
	}
	if _, err := s.Create(dir.Ino, "late.txt", Inode{Mode: syscall.S_IFREG | 0o644}); err != nil {
		t.Fatal(err)
	}
	txn.Delete(dentryKey(RootIno, "d"))
	txn.Delete(InodeKey(dir.Ino))
	if err := txn.Commit(); !errors.Is(err, badger.ErrConflict) {
		t.Fatalf("commit of a removal that raced a create inside: %v, want a conflict", err)
	}
}

// FuzzDecodeInode: what decodes re-encodes to the same record.
func FuzzDecodeInode(f *testing.F) {
	f.Add(EncodeInode(&Inode{Mode: 0o100644, Uid: 1, Mtime: 5, Target: "x",
		Content: Content{Size: 3, Kind: KindSafetensors, Chunks: []chunk.Ref{{Hash: chunk.Hash{1}, Len: 3}}}}))
	f.Add([]byte{inodeVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := DecodeInode(9, b)
		if err != nil {
			return
		}
		again, err := DecodeInode(9, EncodeInode(in))
		if err != nil || !reflect.DeepEqual(in, again) {
			t.Fatalf("re-encoded record differs: %v", err)
		}
	})
}

// A table damaged where Badger reads it on open refuses the store; the
// error names the table as damaged, and a panic in Badger is an error. The
// test looks for such a byte from the table's end, and fails if none
// refuses the open on a checksum.
func TestDamagedOnOpenNamesTheTable(t *testing.T) {
	dir := t.TempDir()
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithChecksumVerificationMode(options.OnBlockRead)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		db.Update(func(txn *badger.Txn) error { return txn.Set(InodeKey(uint64(i)), make([]byte, 100)) })
	}
	db.Close()
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table written")
	}
	orig, _ := os.ReadFile(tables[0])
	for off := len(orig) - 1; off >= 0; off -= 97 {
		damaged := append([]byte(nil), orig...)
		damaged[off] ^= 0x5a
		os.WriteFile(tables[0], damaged, 0o644)
		db, err := Open(opts)
		if err == nil {
			db.Close()
			continue
		}
		got := DamagedOnOpen(err)
		if strings.Contains(err.Error(), "checksum mismatch") {
			if got == nil || !errors.Is(got, ErrDamagedTable) || !strings.Contains(got.Error(), filepath.Base(tables[0])) {
				t.Fatalf("open error %v, named as %v", err, got)
			}
			return
		}
	}
	t.Fatal("no flipped byte made Badger refuse the table on open")
}

// Names are at most 255 bytes, as on ext4, in a create and a rename.
func TestNamesLongerThan255AreRefused(t *testing.T) {
	s := openTemp(t)
	long := strings.Repeat("n", MaxNameLen+1)
	if _, err := s.Create(RootIno, long, Inode{Mode: syscall.S_IFREG | 0o644}); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("create of a %d-byte name: %v", len(long), err)
	}
	if _, err := s.Create(RootIno, long[1:], Inode{Mode: syscall.S_IFREG | 0o644}); err != nil {
		t.Fatalf("create of a %d-byte name: %v", len(long)-1, err)
	}
	if err := s.Rename(RootIno, long[1:], RootIno, long, 0); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("rename to a %d-byte name: %v", len(long), err)
	}
}
