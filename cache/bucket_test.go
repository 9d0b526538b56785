package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/bucket"
	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/object"
	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// storeWithFile makes a store holding checkpoint name with one file of data.
func storeWithFile(t *testing.T, name string, data []byte) *Store {
	t.Helper()
	s := openTemp(t)
	dir, err := s.Create(meta.RootIno, name, meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(dir.Ino, "w.bin", meta.Inode{Mode: syscall.S_IFREG | 0o644, Content: *c}); err != nil {
		t.Fatal(err)
	}
	return s
}

func noProgress(int64) {}

// Push and pull through an in-memory objects: the bytes arrive; a second
// store's push of the same name is refused by the first one's lease; a
// server failing part way publishes no manifest.
func TestPushPullThroughABucket(t *testing.T) {
	ctx := context.Background()
	data := layouttest.Random(30, 3<<20)
	objects := object.NewMemory()
	r := bucket.New(objects, "team", "s3://test/team")
	a := storeWithFile(t, "ck", data)
	if _, err := a.Push(ctx, r, "ck", noProgress); err != nil {
		t.Fatal(err)
	}
	b := openTemp(t)
	if _, err := b.Pull(ctx, r, "ck", noProgress); err != nil {
		t.Fatal(err)
	}
	in, err := b.Resolve("ck/w.bin")
	if err != nil || !bytes.Equal(readAll(t, b, &in.Content), data) {
		t.Fatalf("pulled file: %v", err)
	}
	other := storeWithFile(t, "ck", []byte("another version"))
	if _, err := other.Push(ctx, r, "ck", noProgress); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("push over another store's lease: %v", err)
	}

	// A server that fails after two chunk uploads: no manifest appears.
	third := storeWithFile(t, "ck2", layouttest.Random(31, 4<<20))
	var puts atomic.Int32 // chunks upload 8 at a time
	objects.Fail = func(op, key string) error {
		if op == "put" && strings.Contains(key, "/chunks/") {
			if puts.Add(1) > 2 {
				return errors.New("connection reset")
			}
		}
		return nil
	}
	if _, err := third.Push(ctx, r, "ck2", noProgress); err == nil {
		t.Fatal("a push through a failing server succeeded")
	}
	objects.Fail = nil
	if _, err := objects.Stat(ctx, "team/checkpoints/ck2"); !errors.Is(err, object.ErrNotExist) {
		t.Fatalf("a manifest published though its chunks were not: %v", err)
	}
	if _, err := third.Push(ctx, r, "ck2", noProgress); err != nil {
		t.Fatalf("the push again once the server is back: %v", err)
	}
}

// Refresh imports good manifests and skips a lying one without failing,
// once per version.
func TestRefreshSkipsALyingManifest(t *testing.T) {
	ctx := context.Background()
	objects := object.NewMemory()
	r := bucket.New(objects, "", "s3://test")
	a := storeWithFile(t, "good", []byte("weights"))
	if _, err := a.Push(ctx, r, "good", noProgress); err != nil {
		t.Fatal(err)
	}
	js, _ := objects.Get(ctx, "checkpoints/good", 1<<20)
	var m map[string]any
	json.Unmarshal(js, &m)
	m["name"] = "evil"
	m["entries"].([]any)[1].(map[string]any)["path"] = "../../etc/passwd"
	evil, _ := json.Marshal(m)
	objects.Put(ctx, "checkpoints/evil", evil)

	s := openTemp(t)
	gets := 0
	objects.Fail = func(op, key string) error {
		if op == "get" && key == "checkpoints/evil" {
			gets++
		}
		return nil
	}
	b := &bucketBacking{s: s, r: r, refused: map[string]string{}}
	for range 2 {
		if err := b.refresh(ctx); err != nil {
			t.Fatalf("refresh with a lying manifest in the objects: %v", err)
		}
	}
	if _, err := s.Resolve("good/w.bin"); err != nil {
		t.Fatalf("the good checkpoint: %v", err)
	}
	if _, err := s.Resolve("evil"); err == nil {
		t.Fatal("the lying manifest was imported")
	}
	if gets != 1 {
		t.Fatalf("the refused manifest was read %d times, want once per version", gets)
	}
}

// Importing a manifest marks as held by the bucket only the chunks this
// store lacks; a chunk it wrote itself stays to be uploaded, and a chunk
// stored after the import clears the mark, so no manifest can make
// eviction drop this store's only copy.
func TestImportMarksOnlyChunksTheStoreLacks(t *testing.T) {
	s := openTemp(t)
	mine, err := s.PutChunk(layouttest.Random(20, 1000), "")
	if err != nil {
		t.Fatal(err)
	}
	later := layouttest.Random(21, 1000)
	absent := chunk.Ref{Hash: chunk.Sum([]byte("never stored here")), Len: 17}
	if err := s.markBucketOnly([]chunk.Hash{mine.Hash, chunk.Sum(later), absent.Hash}); err != nil {
		t.Fatal(err)
	}
	if s.uploaded(mine.Hash) {
		t.Error("a chunk this store holds, not uploaded, was marked as in the bucket")
	}
	if !s.uploaded(absent.Hash) {
		t.Error("a chunk only the bucket holds was not marked")
	}
	ref, err := s.PutChunk(later, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.uploaded(ref.Hash) {
		t.Error("a chunk stored after the import kept the import's mark")
	}
}
