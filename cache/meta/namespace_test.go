package meta

import (
	"errors"
	"reflect"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/dgraph-io/badger/v4"
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
