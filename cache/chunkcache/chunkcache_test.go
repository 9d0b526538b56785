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
	load := func(ctx context.Context, h chunk.Hash) ([]byte, error) {
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
	go func() { data, _ := c.Get(context.Background(), h); stays <- data }()
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
