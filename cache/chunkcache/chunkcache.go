// Package chunkcache serves decoded chunks to readers: from a byte-bounded
// LRU, else loaded once however many readers ask at the same time, and
// loaded ahead of sequential readers in the background, a bounded number
// at a time.
package chunkcache

import (
	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Cache holds decoded chunks.
type Cache struct {
	load         func(chunk.Hash) ([]byte, error)
	lru          *lru
	flight       singleflight.Group
	prefetch     chan struct{} // bounds background readahead loads
	hits, misses prometheus.Counter
}

// New makes a cache of at most maxBytes of chunks, which load reads and
// verifies, with at most 2*parallel loads ahead of readers at once; hits
// and misses count lookups.
func New(load func(chunk.Hash) ([]byte, error), maxBytes int64, parallel int, hits, misses prometheus.Counter) *Cache {
	return &Cache{
		load:     load,
		lru:      newLRU(maxBytes),
		prefetch: make(chan struct{}, 2*max(parallel, 1)),
		hits:     hits,
		misses:   misses,
	}
}

// Get returns the verified raw bytes of a chunk. The slice is shared:
// callers must not modify it.
func (c *Cache) Get(h chunk.Hash) ([]byte, error) {
	if data, ok := c.lru.get(h); ok {
		c.hits.Inc()
		return data, nil
	}
	v, err, _ := c.flight.Do(string(h[:]), func() (any, error) {
		if data, ok := c.lru.get(h); ok {
			c.hits.Inc()
			return data, nil
		}
		c.misses.Inc()
		data, err := c.load(h)
		if err != nil {
			return nil, err
		}
		c.lru.add(h, data)
		return data, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
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
			_, _ = c.Get(h) // errors surface when the reader gets there
		}()
	default:
	}
}
