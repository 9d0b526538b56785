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
	f.Add(EncodeInode(&Inode{Mode: 0o100600, Nlink: 3, Xattrs: map[string][]byte{"user.a": []byte("1"), "user.b": nil},
		Content: Content{Size: 3, Chunks: []chunk.Ref{{Hash: chunk.Hash{2}, Len: 3}}}}))
	f.Add(EncodeInode(&Inode{Mode: 0o20644, Rdev: 0x0103}))
	f.Add(EncodeInode(&Inode{Mode: 0o100644, Nlink: 2, Content: Content{Size: 1 << 40, Staged: 0x18ed4591bfadde9c}}))
	f.Add([]byte{inodeVersion1})
	f.Add([]byte{inodeVersion2})
	f.Add([]byte{inodeVersion3})
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

// Hard links: one inode under two names, counted; a removal or a rename
// over one name drops a link, the last one the record.
func TestLinksCountEntries(t *testing.T) {
	s := openTemp(t)
	content := Content{Size: 1, Chunks: []chunk.Ref{{Hash: chunk.Hash{7}, Len: 1}}}
	f, err := s.Create(RootIno, "a", Inode{Mode: syscall.S_IFREG | 0o644, Content: content})
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := s.Create(RootIno, "d", Inode{Mode: syscall.S_IFDIR | 0o755})
	if _, err := s.Link(f.Ino, dir.Ino, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Link(f.Ino, RootIno, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Link(f.Ino, RootIno, "c"); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("link over a taken name: %v", err)
	}
	if _, err := s.Link(dir.Ino, RootIno, "e"); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("link of a folder: %v", err)
	}
	b, err := s.Lookup(dir.Ino, "b")
	if err != nil || b.Ino != f.Ino || b.Links() != 3 || !b.Content.Equal(&content) {
		t.Fatalf("d/b: %+v, %v; want inode %d with 3 links and a's content", b, err, f.Ino)
	}
	if err := s.Remove(RootIno, "a", false); err != nil {
		t.Fatal(err)
	}
	// A new file renamed over c drops c's link, not the inode.
	if _, err := s.Create(RootIno, "new", Inode{Mode: syscall.S_IFREG | 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename(RootIno, "new", RootIno, "c", 0); err != nil {
		t.Fatal(err)
	}
	if in, err := s.GetInode(f.Ino); err != nil || in.Links() != 1 {
		t.Fatalf("after two names went: %+v, %v; want one link", in, err)
	}
	if err := s.Remove(dir.Ino, "b", false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetInode(f.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("the record outlived its last name: %v", err)
	}
}

// A snapshot reads the namespace as it was when it was taken, and takes no
// changes.
func TestSnapshotIsOneMoment(t *testing.T) {
	s := openTemp(t)
	if _, err := s.Create(RootIno, "before", Inode{Mode: syscall.S_IFREG}); err != nil {
		t.Fatal(err)
	}
	err := s.Snapshot(func(snap *Namespace) error {
		if _, err := s.Create(RootIno, "after", Inode{Mode: syscall.S_IFREG}); err != nil {
			return err
		}
		if err := s.Remove(RootIno, "before", false); err != nil {
			return err
		}
		var names []string
		if err := snap.Walk(RootIno, func(rel string, _ *Inode) error { names = append(names, rel); return nil }); err != nil {
			return err
		}
		if !reflect.DeepEqual(names, []string{"before"}) {
			t.Errorf("snapshot walk: %v, want [before]", names)
		}
		if _, err := snap.Create(RootIno, "x", Inode{Mode: syscall.S_IFREG}); !errors.Is(err, ErrSnapshot) {
			t.Errorf("create in a snapshot: %v", err)
		}
		if err := snap.Remove(RootIno, "before", false); !errors.Is(err, ErrSnapshot) {
			t.Errorf("remove in a snapshot: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A record with staged content queues it; Settle swaps in the chunks only
// while the record still holds that staged file, and takes it off the
// queue either way.
func TestStagedContentIsQueuedUntilSettled(t *testing.T) {
	s := openTemp(t)
	a, _ := s.Create(RootIno, "a", Inode{Mode: syscall.S_IFREG | 0o644})
	b, _ := s.Create(RootIno, "b", Inode{Mode: syscall.S_IFREG | 0o644})
	stage := func(ino, id uint64) {
		if _, err := s.Update(ino, func(in *Inode) error { in.Content = Content{Size: 3, Staged: id}; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	stage(a.Ino, 10)
	stage(b.Ino, 11)
	stage(a.Ino, 12) // rewritten: 10 is nobody's now
	queued := func() (out [][2]uint64) {
		if err := s.StagedFiles(func(id, ino uint64) error { out = append(out, [2]uint64{id, ino}); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got, want := queued(), [][2]uint64{{10, a.Ino}, {11, b.Ino}, {12, a.Ino}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("queue %v, want %v", got, want)
	}
	chunked := &Content{Size: 3, Kind: KindSafetensors, Chunks: []chunk.Ref{{Hash: chunk.Hash{7}, Len: 3}}}
	if ok, err := s.Settle(a.Ino, 10, chunked); ok || err != nil {
		t.Fatalf("settle of a replaced staged file: %v, %v", ok, err)
	}
	if _, err := s.Settle(a.Ino, 12, nil); err == nil {
		t.Fatal("dropping a staged file the record holds was allowed")
	}
	if ok, err := s.Settle(a.Ino, 12, &Content{Size: 4}); ok || err == nil {
		t.Fatalf("settle with the wrong length: %v, %v", ok, err)
	}
	if ok, err := s.Settle(a.Ino, 12, chunked); !ok || err != nil {
		t.Fatalf("settle: %v, %v", ok, err)
	}
	if err := s.Remove(RootIno, "b", false); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Settle(b.Ino, 11, nil); ok || err != nil {
		t.Fatalf("dropping the staged file of a removed record: %v, %v", ok, err)
	}
	if got := queued(); len(got) != 0 {
		t.Fatalf("queue after settling: %v", got)
	}
	in, _ := s.GetInode(a.Ino)
	if !in.Content.Equal(chunked) {
		t.Fatalf("settled record holds %+v", in.Content)
	}
}
