package meta

import (
	"errors"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/dgraph-io/badger/v4"
)

// A pack lists exactly the records the index places in it, through puts,
// moves to another pack and deletes; an index made before packs were
// listed gets its listings once.
func TestIndexListsEachPacksRecords(t *testing.T) {
	x := NewIndex(openTemp(t).db)
	a, b, c := chunk.Sum([]byte("a")), chunk.Sum([]byte("b")), chunk.Sum([]byte("c"))
	locA := pack.Loc{Pack: 1, Offset: 0, Len: 10}
	locB := pack.Loc{Pack: 1, Offset: 46, Len: 10}
	locC := pack.Loc{Pack: 2, Offset: 0, Len: 10}
	for h, loc := range map[chunk.Hash]pack.Loc{a: locA, b: locB, c: locC} {
		if err := x.Put(h, loc, false); err != nil {
			t.Fatal(err)
		}
	}
	inPack := func(id uint32) map[chunk.Hash]bool {
		recs, err := x.InPack(id)
		if err != nil {
			t.Fatal(err)
		}
		out := map[chunk.Hash]bool{}
		for _, r := range recs {
			out[r.Hash] = true
		}
		return out
	}
	if got := inPack(1); len(got) != 2 || !got[a] || !got[b] {
		t.Fatalf("pack 1 lists %v", got)
	}
	moved := pack.Loc{Pack: 3, Offset: 0, Len: 10}
	if err := x.Move([]Move{{Hash: a, From: locA, To: moved}, {Hash: c, From: pack.Loc{Pack: 9}, To: pack.Loc{Pack: 3, Offset: 46}}}); err != nil {
		t.Fatal(err)
	}
	if got := inPack(1); len(got) != 1 || !got[b] {
		t.Fatalf("pack 1 after a's move lists %v", got)
	}
	if got := inPack(3); len(got) != 1 || !got[a] {
		t.Fatalf("pack 3 lists %v (c moved from where it was not)", got)
	}
	if loc, _ := x.Get(c); loc != locC {
		t.Fatalf("c, moved from a place it was not, is at %v", loc)
	}
	if _, err := x.Delete([]Record{{b, locB}}); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Get(b); !errors.Is(err, ErrNoChunk) || !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("deleted b: %v", err)
	}
	if got := inPack(1); len(got) != 0 {
		t.Fatalf("pack 1 after b's delete lists %v", got)
	}

	// An index from before the listings: they are made once.
	err := x.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(packRecordKey(locC)); err != nil {
			return err
		}
		return txn.Delete([]byte(keyIndexVersion))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := inPack(2); len(got) != 0 {
		t.Fatal("the listing was not deleted")
	}
	if err := x.EnsureListing(); err != nil {
		t.Fatal(err)
	}
	if got := inPack(2); len(got) != 1 || !got[c] {
		t.Fatalf("pack 2 after the listings were made lists %v", got)
	}
	if err := x.DropPack(3); err != nil {
		t.Fatal(err)
	}
	if got := inPack(3); len(got) != 0 {
		t.Fatalf("a dropped pack lists %v", got)
	}
}

// Uploaded marks: set, read, and the chunks without one listed in one pass.
func TestIndexUploadedMarks(t *testing.T) {
	x := NewIndex(openTemp(t).db)
	a, b := chunk.Sum([]byte("a")), chunk.Sum([]byte("b"))
	x.Put(a, pack.Loc{Pack: 1, Len: 5}, false)
	x.Put(b, pack.Loc{Pack: 1, Offset: 41, Len: 7}, false)
	if err := x.MarkUploaded(a); err != nil {
		t.Fatal(err)
	}
	if up, _ := x.Uploaded(a); !up {
		t.Fatal("a not uploaded")
	}
	var pending []chunk.Hash
	x.NotUploaded(func(h chunk.Hash, _ pack.Loc) error { pending = append(pending, h); return nil })
	if len(pending) != 1 || pending[0] != b {
		t.Fatalf("not uploaded: %v", pending)
	}
	if err := x.Put(a, pack.Loc{Pack: 2, Len: 5}, true); err != nil { // stored again: not the bucket's until uploaded
		t.Fatal(err)
	}
	if up, _ := x.Uploaded(a); up {
		t.Fatal("a chunk stored again kept its upload mark")
	}
}
