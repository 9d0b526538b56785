package store

import (
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// refs counts how many inode records name each chunk, kept as records
// change (meta.Hooks.Refs), and gathers the chunks that may have become
// garbage since the last reclaim pass: those whose count fell to 0, and
// those stored that no record names yet. A pass then weighs only these,
// at a cost that follows what changed, not the size of the store.
//
// The counts live in memory: a mounted store counts them once, from one
// snapshot, in its first pass, and queues the changes committed
// meanwhile (see build). Nothing of them is on disk, so a crash can leave
// no count wrong.
type refs struct {
	mu sync.Mutex
	// counts are by the first half of a chunk's hash, which takes half the
	// memory: two chunks that shared one would only share a count, which
	// can keep a chunk no record names, never free one a record names.
	counts map[refKey]int32 // nil until built
	// candidates may be garbage: the next pass weighs them.
	candidates map[chunk.Hash]struct{}
	// queue holds the changes committed while the counts are built, from
	// the snapshot they are counted from on; nil when not building.
	queue []refChange
}

type refChange struct{ removed, added []chunk.Ref }

type refKey [16]byte

func keyOf(h chunk.Hash) refKey { return refKey(h[:16]) }

func newRefs() *refs { return &refs{candidates: map[chunk.Hash]struct{}{}} }

// changed applies a committed change: the Refs hook.
func (r *refs) changed(removed, added []chunk.Ref) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.queue != nil:
		r.queue = append(r.queue, refChange{removed, added})
	case r.counts != nil:
		r.applyLocked(removed, added)
	}
}

func (r *refs) applyLocked(removed, added []chunk.Ref) {
	for _, c := range added {
		r.counts[keyOf(c.Hash)]++
	}
	for _, c := range removed {
		k := keyOf(c.Hash)
		if r.counts[k]--; r.counts[k] <= 0 {
			delete(r.counts, k)
			r.candidates[c.Hash] = struct{}{}
		}
	}
}

// stored notes a chunk just stored: no record may ever name it.
func (r *refs) stored(h chunk.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil || r.counts[keyOf(h)] == 0 {
		r.candidates[h] = struct{}{}
	}
}

// startBuild is called at the moment of the snapshot the counts are built
// from: changes after it are queued until install.
func (r *refs) startBuild() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = []refChange{}
}

// abandon gives up a build that failed: nothing is queued any more.
func (r *refs) abandon() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = nil
}

// install takes the counts built from the snapshot, applies the changes
// queued since, and makes every chunk the index held with no count a
// candidate.
func (r *refs) install(counts map[refKey]int32, unnamed []chunk.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts = counts
	for _, h := range unnamed {
		r.candidates[h] = struct{}{}
	}
	for _, c := range r.queue {
		r.applyLocked(c.removed, c.added)
	}
	r.queue = nil
}

// built reports whether the counts are kept.
func (r *refs) built() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts != nil
}

// named reports whether a record names chunk h; the caller holds r.mu.
func (r *refs) namedLocked(h chunk.Hash) bool { return r.counts[keyOf(h)] > 0 }

// take returns the candidates gathered so far and starts a new set.
func (r *refs) take() map[chunk.Hash]struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.candidates
	r.candidates = map[chunk.Hash]struct{}{}
	return c
}

// keep makes h a candidate of the next pass again.
func (r *refs) keep(h chunk.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.candidates[h] = struct{}{}
}
