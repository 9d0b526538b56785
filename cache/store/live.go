package store

import (
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Pin keeps the chunks of cs from being reclaimed until the returned
// function is called: an open file holds its content, which an unlink or a
// commit may take out of the namespace.
func (s *Store) Pin(cs ...*meta.Content) (unpin func()) {
	var hs []chunk.Hash
	for _, c := range cs {
		if c == nil {
			continue
		}
		for _, ref := range c.Chunks {
			hs = append(hs, ref.Hash)
		}
	}
	s.live.Pin(hs)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.live.Unpin(hs)
			s.pacer.Kick() // what the file held may be garbage now
		})
	}
}

// pinningPutter stores an ingest's chunks and pins them until release.
type pinningPutter struct {
	s  *Store
	mu sync.Mutex
	hs []chunk.Hash
}

func (p *pinningPutter) PutChunk(raw []byte, hint chunk.Hint) (chunk.Ref, error) {
	ref, err := p.s.PutChunk(raw, hint)
	if err == nil && p.s.live != nil {
		p.s.live.Pin([]chunk.Hash{ref.Hash})
		p.mu.Lock()
		p.hs = append(p.hs, ref.Hash)
		p.mu.Unlock()
	}
	return ref, err
}

func (p *pinningPutter) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.s.live.Unpin(p.hs)
	p.hs = nil
}
