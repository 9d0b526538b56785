package store

import (
	"github.com/ckptfs/ckptfs/cache/chunk"
	"golang.org/x/sync/singleflight"
)

// chunkCache serves decoded chunks: from the LRU, else loaded and decoded
// once however many readers ask at the same time.
type chunkCache struct {
	store    *Store
	codecs   *chunk.Codecs
	lru      *lru
	flight   singleflight.Group
	prefetch chan struct{} // bounds background readahead loads
}

func newChunkCache(s *Store, maxBytes int64, parallel int) *chunkCache {
	return &chunkCache{
		store:    s,
		codecs:   chunk.NewCodecs(),
		lru:      newLRU(maxBytes),
		prefetch: make(chan struct{}, 2*max(parallel, 1)),
	}
}

// get returns the verified raw bytes of a chunk. The slice is shared: callers
// must not modify it.
func (c *chunkCache) get(h chunk.Hash) ([]byte, error) {
	if data, ok := c.lru.get(h); ok {
		c.store.metrics.cacheHits.Inc()
		return data, nil
	}
	v, err, _ := c.flight.Do(string(h[:]), func() (any, error) {
		if data, ok := c.lru.get(h); ok {
			c.store.metrics.cacheHits.Inc()
			return data, nil
		}
		c.store.metrics.cacheMisses.Inc()
		data, err := c.store.loadChunk(h)
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

// warm loads a chunk in the background if it is not cached and a readahead
// slot is free; readahead never queues behind itself.
func (c *chunkCache) warm(h chunk.Hash) {
	if c.lru.contains(h) {
		return
	}
	select {
	case c.prefetch <- struct{}{}:
		go func() {
			defer func() { <-c.prefetch }()
			_, _ = c.get(h) // errors surface when the reader gets there
		}()
	default:
	}
}
