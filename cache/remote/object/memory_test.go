package object

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestMemoryBehavesAsAStore checks the calls' contracts on the in-memory
// store that the bucket logic's unit tests stand on. (S3 is checked
// against a real MinIO server by the integration tests.)
func TestMemoryBehavesAsAStore(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	if _, err := m.Get(ctx, "a", 10); !errors.Is(err, ErrNotExist) {
		t.Fatalf("get of a missing object: %v", err)
	}
	if _, err := m.Stat(ctx, "a"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("stat of a missing object: %v", err)
	}
	m.Put(ctx, "p/a", []byte("12345"))
	m.Put(ctx, "p/b", []byte("x"))
	m.Put(ctx, "q/c", []byte("y"))
	if _, err := m.Get(ctx, "p/a", 4); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("get over the limit: %v", err)
	}
	before, _ := m.Stat(ctx, "p/a")
	m.Put(ctx, "p/a", []byte("54321"))
	if after, _ := m.Stat(ctx, "p/a"); after.ETag == before.ETag || after.Size != 5 {
		t.Fatalf("ETag %q after a change, was %q", after.ETag, before.ETag)
	}
	if list, _ := m.List(ctx, "p/"); len(list) != 2 || list[0].Key != "p/a" || list[1].Key != "p/b" {
		t.Fatalf("list p/: %+v", list)
	}
	var won atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := m.PutIfAbsent(ctx, "lease", []byte("me")); err == nil && ok {
				won.Add(1)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d of 8 racing PutIfAbsent won", won.Load())
	}
	m.Remove(ctx, "p/b")
	if _, err := m.Get(ctx, "p/b", 10); !errors.Is(err, ErrNotExist) {
		t.Fatalf("get after remove: %v", err)
	}
	down := errors.New("server down")
	m.Fail = func(op, key string) error { return down }
	if err := m.Put(ctx, "z", nil); !errors.Is(err, down) {
		t.Fatalf("injected failure: %v", err)
	}
}
