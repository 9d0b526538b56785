package reclaim

import (
	"sync"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// Live are the chunks a pass must keep although no inode record
// references them, or none did when the pass read the records:
//   - pinned: read by an open file whose record is gone (unlinked, or
//     replaced by a commit), written by an ingest still running, or being
//     encoded as a delta;
//   - touched: stored, found by dedup or released by an ingest since the
//     pass before the last began, which covers the moment between an
//     ingest's end and the commit of the content it made.
//
// A chunk touched at t is kept by every pass that starts before two more
// have started, and generations turn at most once per minAge, so a commit
// has at least that long to land. A nil Live keeps nothing: a store that
// never reclaims while in use tracks none.
type Live struct {
	minAge time.Duration

	mu              sync.Mutex
	pinned          map[chunk.Hash]int
	touched, before map[chunk.Hash]struct{}
	turned          time.Time
}

// NewLive keeps what was touched for at least minAge.
func NewLive(minAge time.Duration) *Live {
	return &Live{minAge: minAge, pinned: map[chunk.Hash]int{},
		touched: map[chunk.Hash]struct{}{}, before: map[chunk.Hash]struct{}{}, turned: time.Now()}
}

// Touch keeps hs through the next two passes.
func (l *Live) Touch(hs ...chunk.Hash) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range hs {
		l.touched[h] = struct{}{}
	}
}

// Pin keeps hs until they are unpinned as often.
func (l *Live) Pin(hs []chunk.Hash) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range hs {
		l.pinned[h]++
	}
}

// Unpin lets hs go, touched: the commit of what they held may follow.
func (l *Live) Unpin(hs []chunk.Hash) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range hs {
		if l.pinned[h]--; l.pinned[h] <= 0 {
			delete(l.pinned, h)
		}
		l.touched[h] = struct{}{}
	}
}

// MinAge is how long a touched chunk is kept at least.
func (l *Live) MinAge() time.Duration {
	if l == nil {
		return 0
	}
	return l.minAge
}

// turn starts a new generation of touched chunks, if the current one is
// old enough.
func (l *Live) turn() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.turned) < l.minAge {
		return
	}
	l.before, l.touched, l.turned = l.touched, map[chunk.Hash]struct{}{}, time.Now()
}

func (l *Live) lock() {
	if l != nil {
		l.mu.Lock()
	}
}

func (l *Live) unlock() {
	if l != nil {
		l.mu.Unlock()
	}
}

// keepsLocked reports whether chunk h must stay, and whether for having
// been touched lately, which a later pass no longer holds against it; the
// caller holds the lock.
func (l *Live) keepsLocked(h chunk.Hash) (keep, recent bool) {
	if l == nil {
		return false, false
	}
	_, t := l.touched[h]
	_, b := l.before[h]
	return t || b || l.pinned[h] > 0, t || b
}
