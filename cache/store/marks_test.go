package store

import (
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// Importing a manifest marks as held by the bucket only the chunks this
// store lacks; a chunk it wrote itself stays to be uploaded, and a chunk
// stored after the import clears the mark, so no manifest can make
// eviction drop this store's only copy.
func TestImportMarksOnlyChunksTheStoreLacks(t *testing.T) {
	s := openTemp(t)
	mine, err := s.PutChunk(random(20, 1000), "")
	if err != nil {
		t.Fatal(err)
	}
	later := random(21, 1000)
	absent := chunk.Ref{Hash: chunk.Sum([]byte("never stored here")), Len: 17}
	if err := s.MarkBucketOnly([]chunk.Hash{mine.Hash, chunk.Sum(later), absent.Hash}); err != nil {
		t.Fatal(err)
	}
	if s.Uploaded(mine.Hash) {
		t.Error("a chunk this store holds, not uploaded, was marked as in the bucket")
	}
	if !s.Uploaded(absent.Hash) {
		t.Error("a chunk only the bucket holds was not marked")
	}
	ref, err := s.PutChunk(later, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Uploaded(ref.Hash) {
		t.Error("a chunk stored after the import kept the import's mark")
	}
}
