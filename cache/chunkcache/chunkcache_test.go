package chunkcache

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
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
			t.Error("no buffer for a chunk of bufSize")
			return nil, errors.New("no buffer")
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

// Readers that give up at random moments, peeks and readahead, over more
// chunks than the LRU holds: every reader's bytes are its chunk's, and
// stay so while it holds them.
func TestHeldChunksNeverChangeUnderReaders(t *testing.T) {
	load := func(ctx context.Context, h chunk.Hash, buffer func(int) []byte) ([]byte, error) {
		select {
		case <-time.After(time.Duration(h[1]) * 10 * time.Microsecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if h[1]%7 == 0 {
			return nil, errors.New("load failed")
		}
		return append(buffer(bufSize), bytes.Repeat([]byte{h[0]}, bufSize)...), nil
	}
	c := New(load, 3*bufSize, 2, counter(), counter())
	check := func(got Chunk, h chunk.Hash) {
		time.Sleep(20 * time.Microsecond) // long enough for others to evict and load
		if got.Data[0] != h[0] || got.Data[bufSize-1] != h[0] || got.Data[bufSize/2] != h[0] {
			t.Errorf("chunk %d holds bytes of chunk %d", h[0], got.Data[0])
		}
		got.Release()
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 100 {
				i := byte(r.IntN(12))
				h := chunk.Hash{i + 1, byte(r.IntN(30))}
				switch r.IntN(4) {
				case 0:
					if got, ok := c.Peek(h); ok {
						check(got, h)
					}
				case 1:
					c.Warm(h)
				default:
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(300))*time.Microsecond)
					if got, err := c.Get(ctx, h); err == nil {
						check(got, h)
					}
					cancel()
				}
			}
		}()
	}
	wg.Wait()
}
