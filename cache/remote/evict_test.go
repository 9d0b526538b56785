package remote

import (
	"bytes"
	"context"
	"errors"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/storetest"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/fsck"
	"github.com/ckptfs/ckptfs/cache/remote/object"
)

// A store in front of a bucket: publish uploads the chunks, eviction then
// brings the packs under the bound, and the file still reads back whole,
// its evicted chunks fetched; a chunk the bucket serves damaged is EIO.
func TestEvictThenFetchBack(t *testing.T) {
	ctx := context.Background()
	data := storetest.Random(40, 6<<20)
	s := openTemp(t)
	objects := object.NewMemory()
	r := New(objects, "", "s3://test")
	const bound = 2 << 20
	b, err := newBacking(s, r, Options{DiskBytes: bound})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetBacking(b, r.String()); err != nil {
		t.Fatal(err)
	}
	addFile(t, s, "ck", data) // in packs of 4 MiB, the smallest a cache uses
	if err := b.Publish(ctx, "ck"); err != nil {
		t.Fatal(err)
	}
	before := packBytes(t, b)
	if err := b.evict(ctx); err != nil {
		t.Fatal(err)
	}
	after := packBytes(t, b)
	if after > max(bound, before/2) || after >= before {
		t.Fatalf("packs of %d bytes before eviction, %d after, the bound is %d", before, after, bound)
	}
	rep, err := fsck.Store(s)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("check: %v %v", err, rep.Problems)
	}
	if rep.InBucket == 0 {
		t.Fatal("check counts no chunk as held by the bucket after eviction")
	}
	if got := readFile(t, s, "ck/w.bin"); !bytes.Equal(got, data) {
		t.Fatal("the file read after eviction differs")
	}

	// The bucket serves a damaged copy of a chunk the store lacks.
	h := chunk.Sum([]byte("not what the bucket holds"))
	objects.Put(ctx, r.ChunkKey(h), []byte("garbage"))
	if _, err := b.Fetch(context.Background(), h, meta.ErrNoChunk); !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("fetch of a damaged chunk: %v, want ErrCorrupt", err)
	}
	if s.HasChunk(h) {
		t.Fatal("a damaged chunk from the bucket was stored")
	}
}

func packBytes(t *testing.T, b *Backing) int64 {
	t.Helper()
	packs, err := b.s.Packs()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range packs {
		n += p.Size
	}
	return n
}
