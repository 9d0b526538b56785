package store

import (
	"sync"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// liveChunks are the chunks a reclaim pass must keep although no inode
// record references them, or none did when the pass read the records:
//   - pinned: read by an open file whose record is gone (unlinked, or
//     replaced by a commit) or written by an ingest still running;
//   - touched: stored, found by dedup or released by an ingest since the
//     pass before the last began, which covers the moment between an
//     ingest's end and the commit of the content it made.
//
// A chunk touched at t is kept by every pass that starts before two more
// have started, and generations turn at most once per minAge, so a commit
// has at least that long to land.
type liveChunks struct {
	enabled bool // only a store that reclaims while in use tracks them
	minAge  time.Duration

	mu              sync.Mutex
	pinned          map[chunk.Hash]int
	touched, before map[chunk.Hash]struct{}
	turned          time.Time
}

func newLiveChunks(enabled bool) *liveChunks {
	return &liveChunks{enabled: enabled, minAge: 2 * time.Second, pinned: map[chunk.Hash]int{},
		touched: map[chunk.Hash]struct{}{}, before: map[chunk.Hash]struct{}{}, turned: time.Now()}
}

func (l *liveChunks) touch(hs ...chunk.Hash) {
	if !l.enabled {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range hs {
		l.touched[h] = struct{}{}
	}
}

func (l *liveChunks) pin(hs []chunk.Hash) {
	if !l.enabled {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range hs {
		l.pinned[h]++
	}
}

func (l *liveChunks) unpin(hs []chunk.Hash) {
	if !l.enabled {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range hs {
		if l.pinned[h]--; l.pinned[h] <= 0 {
			delete(l.pinned, h)
		}
		l.touched[h] = struct{}{} // the commit of what it held may follow
	}
}

// turn starts a new generation of touched chunks, if the current one is
// old enough.
func (l *liveChunks) turn() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.turned) < l.minAge {
		return
	}
	l.before, l.touched, l.turned = l.touched, map[chunk.Hash]struct{}{}, time.Now()
}

// keepsLocked reports whether chunk h must stay, and whether for having
// been touched lately, which a later pass no longer holds against it; the
// caller holds l.mu.
func (l *liveChunks) keepsLocked(h chunk.Hash) (keep, recent bool) {
	_, t := l.touched[h]
	_, b := l.before[h]
	return t || b || l.pinned[h] > 0, t || b
}

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
	s.live.pin(hs)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.live.unpin(hs)
			s.reclaimer.kick() // what the file held may be garbage now
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
	if err == nil && p.s.live.enabled {
		p.s.live.pin([]chunk.Hash{ref.Hash})
		p.mu.Lock()
		p.hs = append(p.hs, ref.Hash)
		p.mu.Unlock()
	}
	return ref, err
}

func (p *pinningPutter) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.s.live.unpin(p.hs)
	p.hs = nil
}
