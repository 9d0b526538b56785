// Package chunkcache serves decoded chunks to readers: from a byte-bounded
// LRU, else loaded once however many readers ask at the same time, and
// loaded ahead of sequential readers in the background, a bounded number
// at a time.
package chunkcache

import (
	"context"
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/prometheus/client_golang/prometheus"
)

// Cache holds decoded chunks.
type Cache struct {
	load         func(context.Context, chunk.Hash) ([]byte, error)
	lru          *lru
	prefetch     chan struct{} // bounds background readahead loads
	hits, misses prometheus.Counter

	mu      sync.Mutex
	flights map[chunk.Hash]*flight // loads under way
}

// flight is one load of a chunk, shared by the readers that wait for it:
// it is cancelled once every one of them has given up, so that a reader
// interrupted stops a fetch from a bucket, and another reader's does not.
type flight struct {
	done    chan struct{}
	data    []byte
	err     error
	waiters int
	cancel  context.CancelFunc
}

// New makes a cache of at most maxBytes of chunks, which load reads and
// verifies (stopping when its context is done), with at most 2*parallel
// loads ahead of readers at once; hits and misses count lookups.
func New(load func(context.Context, chunk.Hash) ([]byte, error), maxBytes int64, parallel int, hits, misses prometheus.Counter) *Cache {
	return &Cache{
		load:     load,
		lru:      newLRU(maxBytes),
		prefetch: make(chan struct{}, 2*max(parallel, 1)),
		hits:     hits,
		misses:   misses,
		flights:  map[chunk.Hash]*flight{},
	}
}

// Get returns the verified raw bytes of a chunk, or ctx's error once it is
// done. The slice is shared: callers must not modify it.
func (c *Cache) Get(ctx context.Context, h chunk.Hash) ([]byte, error) {
	if data, ok := c.lru.get(h); ok {
		c.hits.Inc()
		return data, nil
	}
	c.mu.Lock()
	f := c.flights[h]
	if f == nil {
		if data, ok := c.lru.get(h); ok { // loaded meanwhile
			c.mu.Unlock()
			c.hits.Inc()
			return data, nil
		}
		c.misses.Inc()
		var lctx context.Context
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		c.flights[h] = f
		go c.run(lctx, h, f)
	}
	f.waiters++
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.data, f.err
	case <-ctx.Done():
		c.mu.Lock()
		if f.waiters--; f.waiters == 0 {
			f.cancel()
			if c.flights[h] == f {
				delete(c.flights, h) // a reader after this one loads anew
			}
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// Peek returns a chunk if the cache holds it, and loads nothing: for a
// load that needs another chunk, which must not wait on a flight (a loop
// of loads would wait for itself).
func (c *Cache) Peek(h chunk.Hash) ([]byte, bool) { return c.lru.get(h) }

// run loads chunk h for flight f.
func (c *Cache) run(ctx context.Context, h chunk.Hash, f *flight) {
	defer f.cancel()
	f.data, f.err = c.load(ctx, h)
	if f.err == nil {
		c.lru.add(h, f.data)
	}
	c.mu.Lock()
	if c.flights[h] == f {
		delete(c.flights, h)
	}
	c.mu.Unlock()
	close(f.done)
}

// Warm loads a chunk in the background if it is not cached and a
// readahead slot is free; readahead never queues behind itself.
func (c *Cache) Warm(h chunk.Hash) {
	if c.lru.contains(h) {
		return
	}
	select {
	case c.prefetch <- struct{}{}:
		go func() {
			defer func() { <-c.prefetch }()
			_, _ = c.Get(context.Background(), h) // errors surface when the reader gets there
		}()
	default:
	}
}
