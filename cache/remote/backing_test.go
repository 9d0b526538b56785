package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/remote/object"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
)

// storeWithFile makes a store holding checkpoint name with one file of data.
func storeWithFile(t *testing.T, name string, data []byte) *store.Store {
	t.Helper()
	s := openTemp(t)
	addFile(t, s, name, data)
	return s
}

// addFile adds checkpoint name to s, with one file of data: name/w.bin.
func addFile(t *testing.T, s *store.Store, name string, data []byte) {
	t.Helper()
	dir, err := s.Namespace().Create(meta.RootIno, name, meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Namespace().Create(dir.Ino, "w.bin", meta.Inode{Mode: syscall.S_IFREG | 0o644, Content: *c}); err != nil {
		t.Fatal(err)
	}
}

func noProgress(int64) {}

// openTemp opens an empty store for the test's length.
func openTemp(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readFile reads the whole file at p in s.
func readFile(t *testing.T, s *store.Store, p string) []byte {
	t.Helper()
	in, err := s.Namespace().Resolve(p)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, in.Content.Size)
	if _, err := s.NewReader(p, &in.Content).ReadAt(out, 0); err != nil && err != io.EOF {
		t.Fatalf("read %s: %v", p, err)
	}
	return out
}

// Push and pull through an in-memory objects: the bytes arrive; a second
// store's push of the same name is refused by the first one's lease; a
// server failing part way publishes no manifest.
func TestPushPullThroughABucket(t *testing.T) {
	ctx := context.Background()
	data := storetest.Random(30, 3<<20)
	objects := object.NewMemory()
	r := New(objects, "team", "s3://test/team")
	a := storeWithFile(t, "ck", data)
	if _, err := Push(ctx, a, r, "ck", noProgress); err != nil {
		t.Fatal(err)
	}
	b := openTemp(t)
	if _, err := Pull(ctx, b, r, "ck", noProgress); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, b, "ck/w.bin"), data) {
		t.Fatal("the pulled file differs from the pushed one")
	}
	other := storeWithFile(t, "ck", []byte("another version"))
	if _, err := Push(ctx, other, r, "ck", noProgress); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("push over another store's lease: %v", err)
	}

	// A server that fails after two chunk uploads: no manifest appears.
	third := storeWithFile(t, "ck2", storetest.Random(31, 4<<20))
	var puts atomic.Int32 // chunks upload 8 at a time
	objects.Fail = func(op, key string) error {
		if op == "put" && strings.Contains(key, "/chunks/") {
			if puts.Add(1) > 2 {
				return errors.New("connection reset")
			}
		}
		return nil
	}
	if _, err := Push(ctx, third, r, "ck2", noProgress); err == nil {
		t.Fatal("a push through a failing server succeeded")
	}
	objects.Fail = nil
	if _, err := objects.Stat(ctx, "team/checkpoints/ck2"); !errors.Is(err, object.ErrNotExist) {
		t.Fatalf("a manifest published though its chunks were not: %v", err)
	}
	if _, err := Push(ctx, third, r, "ck2", noProgress); err != nil {
		t.Fatalf("the push again once the server is back: %v", err)
	}
}

// Refresh imports good manifests and skips a lying one without failing,
// once per version.
func TestRefreshSkipsALyingManifest(t *testing.T) {
	ctx := context.Background()
	objects := object.NewMemory()
	r := New(objects, "", "s3://test")
	a := storeWithFile(t, "good", []byte("weights"))
	if _, err := Push(ctx, a, r, "good", noProgress); err != nil {
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
	b, err := newBacking(s, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.refresh(ctx); err != nil {
			t.Fatalf("refresh with a lying manifest in the objects: %v", err)
		}
	}
	if _, err := s.Namespace().Resolve("good/w.bin"); err != nil {
		t.Fatalf("the good checkpoint: %v", err)
	}
	if _, err := s.Namespace().Resolve("evil"); err == nil {
		t.Fatal("the lying manifest was imported")
	}
	if gets != 1 {
		t.Fatalf("the refused manifest was read %d times, want once per version", gets)
	}
}
