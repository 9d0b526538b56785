// Package chunkcache serves decoded chunks to readers: from a byte-bounded
// LRU, else loaded once however many readers ask at the same time, and
// loaded ahead of sequential readers in the background, a bounded number
// at a time. Readers hold what they get until they release it, so that a
// chunk's buffer is decoded into again only once nobody reads it.
package chunkcache

import (
	"context"
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/prometheus/client_golang/prometheus"
)

// Load reads and verifies chunk h, stopping when ctx is done. It may
// decode into the buffer buffer(n) returns for a chunk of n bytes: an
// empty slice with room for n, or nil for a chunk it should allocate.
type Load func(ctx context.Context, h chunk.Hash, buffer func(n int) []byte) ([]byte, error)

// Cache holds decoded chunks.
type Cache struct {
	load         Load
	lru          *lru
	bufs         buffers
	prefetch     chan struct{} // bounds background readahead loads
	hits, misses prometheus.Counter

	mu      sync.Mutex
	flights map[chunk.Hash]*flight // loads under way
}

// flight is one load of a chunk, shared by the readers that wait for it:
// it is cancelled once every one of them has given up, so that a reader
// interrupted stops a fetch from a bucket, and another reader's does not.
type flight struct {
	done     chan struct{}
	e        *entry
	err      error
	waiters  int
	finished bool // e and err are set, and e is held for each waiter
	cancel   context.CancelFunc
}

// New makes a cache of at most maxBytes of chunks, which load reads and
// verifies, with at most 2*parallel loads ahead of readers at once; hits
// and misses count lookups.
func New(load Load, maxBytes int64, parallel int, hits, misses prometheus.Counter) *Cache {
	return &Cache{
		load:     load,
		lru:      newLRU(maxBytes),
		prefetch: make(chan struct{}, 2*max(parallel, 1)),
		hits:     hits,
		misses:   misses,
		flights:  map[chunk.Hash]*flight{},
	}
}

// Get returns the verified raw bytes of a chunk, held until the caller
// releases them, or ctx's error once it is done.
func (c *Cache) Get(ctx context.Context, h chunk.Hash) (Chunk, error) {
	if e := c.lru.get(h); e != nil {
		c.hits.Inc()
		return e.chunk(), nil
	}
	c.mu.Lock()
	f := c.flights[h]
	if f == nil {
		if e := c.lru.get(h); e != nil { // loaded meanwhile
			c.mu.Unlock()
			c.hits.Inc()
			return e.chunk(), nil
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
		return f.result()
	case <-ctx.Done():
		c.mu.Lock()
		finished := f.finished
		if !finished {
			if f.waiters--; f.waiters == 0 {
				f.cancel()
				if c.flights[h] == f {
					delete(c.flights, h) // a reader after this one loads anew
				}
			}
		}
		c.mu.Unlock()
		if finished && f.e != nil { // held for this waiter when the load ended
			f.e.release()
		}
		return Chunk{}, ctx.Err()
	}
}

// result is a finished flight's chunk, held for the waiter asking.
func (f *flight) result() (Chunk, error) {
	if f.err != nil {
		return Chunk{}, f.err
	}
	return f.e.chunk(), nil
}

// Peek returns a chunk, held, if the cache holds it, and loads nothing:
// for a load that needs another chunk, which must not wait on a flight (a
// loop of loads would wait for itself).
func (c *Cache) Peek(h chunk.Hash) (Chunk, bool) {
	if e := c.lru.get(h); e != nil {
		return e.chunk(), true
	}
	return Chunk{}, false
}

// run loads chunk h for flight f.
func (c *Cache) run(ctx context.Context, h chunk.Hash, f *flight) {
	defer f.cancel()
	var buf []byte
	buffer := func(n int) []byte {
		if buf != nil || n < bufMin || n > bufSize {
			return nil
		}
		buf = c.bufs.get()
		return buf
	}
	data, err := c.load(ctx, h, buffer)
	var e *entry
	if err == nil {
		e = &entry{data: data}
		e.refs.Store(1) // run's own, until the waiters hold it
		if buf != nil {
			var holds bool
			if holds, e.data = decodedInto(data, buf); holds {
				e.bufs = &c.bufs
				buf = nil
			}
		}
		c.lru.add(h, e)
	}
	if buf != nil { // not what the chunk was decoded into
		c.bufs.put(buf)
	}
	c.mu.Lock()
	if c.flights[h] == f {
		delete(c.flights, h)
	}
	f.e, f.err, f.finished = e, err, true
	if e != nil {
		e.refs.Add(int32(f.waiters))
	}
	c.mu.Unlock()
	close(f.done)
	if e != nil {
		e.release()
	}
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
			got, _ := c.Get(context.Background(), h) // errors surface when the reader gets there
			got.Release()
		}()
	default:
	}
}
