package chunkcache

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/prometheus/client_golang/prometheus"
)

func counter() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "c"}) }

// Readers of one chunk at once share one load; a reader that gives up
// leaves the load to the others, and the last one giving up stops it: an
// interrupted read stops a fetch from a bucket.
func TestALoadStopsWhenItsLastReaderGoes(t *testing.T) {
	var loads atomic.Int32
	stopped := make(chan struct{})
	release := make(chan struct{})
	load := func(ctx context.Context, h chunk.Hash, _ func(int) []byte) ([]byte, error) {
		loads.Add(1)
		select {
		case <-release:
			return []byte("chunk"), nil
		case <-ctx.Done():
			close(stopped)
			return nil, ctx.Err()
		}
	}
	c := New(load, 1<<20, 2, counter(), counter())
	h := chunk.Sum([]byte("chunk"))

	first, cancelFirst := context.WithCancel(context.Background())
	gaveUp := make(chan error)
	go func() { _, err := c.Get(first, h); gaveUp <- err }()
	stays := make(chan []byte)
	go func() { got, _ := c.Get(context.Background(), h); stays <- got.Data }()
	time.Sleep(50 * time.Millisecond)
	cancelFirst()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("the reader that gave up: %v", err)
	}
	select {
	case <-stopped:
		t.Fatal("the load stopped while another reader waited for it")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if data := <-stays; !bytes.Equal(data, []byte("chunk")) {
		t.Fatalf("the reader that stayed got %q", data)
	}
	if loads.Load() != 1 {
		t.Fatalf("%d loads for readers at once", loads.Load())
	}

	// Alone, a reader interrupted stops the load.
	c = New(load, 1<<20, 2, counter(), counter())
	release = make(chan struct{})
	alone, cancelAlone := context.WithCancel(context.Background())
	go func() { _, err := c.Get(alone, h); gaveUp <- err }()
	time.Sleep(50 * time.Millisecond)
	cancelAlone()
	<-gaveUp
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the load went on after its only reader was interrupted")
	}
}

// A chunk decoded into a buffer of the cache's gets that buffer back only
// once the LRU and every reader have let go of it, and a reader's bytes
// never change while it holds them.
func TestABufferIsUsedAgainOnlyOnceNobodyHoldsIt(t *testing.T) {
	fill := func(h chunk.Hash) byte { return h[0] }
	var decodedInto [][]byte
	load := func(_ context.Context, h chunk.Hash, buffer func(int) []byte) ([]byte, error) {
		buf := buffer(bufSize)
		if buf == nil {
			t.Fatal("no buffer for a chunk of bufSize")
		}
		decodedInto = append(decodedInto, buf[:1])
		return append(buf, bytes.Repeat([]byte{fill(h)}, bufSize)...), nil
	}
	c := New(load, bufSize, 1, counter(), counter()) // room for one chunk
	a, b := chunk.Hash{1}, chunk.Hash{2}

	held, err := c.Get(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	// b evicts a; a's buffer is still held, so b and later loads get others.
	for i := 0; i < 3; i++ {
		got, err := c.Get(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		got.Release()
		if got, _ := c.Get(context.Background(), chunk.Hash{byte(3 + i)}); true {
			got.Release()
		}
	}
	if !bytes.Equal(held.Data, bytes.Repeat([]byte{1}, bufSize)) {
		t.Fatal("a held chunk changed under its reader")
	}
	for _, d := range decodedInto[1:] {
		if &d[0] == &held.Data[0] {
			t.Fatal("a held chunk's buffer was decoded into")
		}
	}
	held.Release()
	if got := held.e.refs.Load(); got != 0 {
		t.Fatalf("%d holders after the last release, want 0", got)
	}

	// A chunk of half a buffer or less is not given one.
	small := New(func(_ context.Context, _ chunk.Hash, buffer func(int) []byte) ([]byte, error) {
		if buffer(bufSize/2) != nil {
			t.Error("a buffer for a chunk of half its size")
		}
		return make([]byte, bufSize/2), nil
	}, bufSize, 1, counter(), counter())
	got, _ := small.Get(context.Background(), a)
	got.Release()
}
