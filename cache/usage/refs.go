package usage

import (
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// Refs counts how many inode records name each chunk, kept as records
// change (Changed, from meta.Hooks.Records), and gathers the chunks that
// may have become garbage since the last reclaim pass: those whose count
// fell to 0, and those stored that no record names yet. A pass then weighs
// only these, at a cost that follows what changed, not the size of the
// store.
//
// The counts live in memory: a mounted store counts them once, from one
// snapshot, in its first reclaim pass, and queues the changes committed
// meanwhile (Start to Install). Nothing of them is on disk, so a crash can
// leave no count wrong.
type Refs struct {
	mu sync.Mutex
	// counts are by the first half of a chunk's hash, which takes half the
	// memory: two chunks that shared one would only share a count, which
	// can keep a chunk no record names, never free one a record names.
	counts map[Key]int32 // nil until built
	// candidates may be garbage: the next pass weighs them.
	candidates map[chunk.Hash]struct{}
	// queue holds the changes committed while the counts are built, from
	// the snapshot they are counted from on; nil when not building.
	queue []refChange
}

type refChange struct{ removed, added []chunk.Ref }

// Key is what chunks are counted by: the first half of their hash.
type Key [16]byte

// KeyOf is chunk h's Key.
func KeyOf(h chunk.Hash) Key { return Key(h[:16]) }

func NewRefs() *Refs { return &Refs{candidates: map[chunk.Hash]struct{}{}} }

// Changed applies a committed change to the counts.
func (r *Refs) Changed(removed, added []chunk.Ref) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.queue != nil:
		r.queue = append(r.queue, refChange{removed, added})
	case r.counts != nil:
		r.applyLocked(removed, added)
	}
}

func (r *Refs) applyLocked(removed, added []chunk.Ref) {
	for _, c := range added {
		r.counts[KeyOf(c.Hash)]++
	}
	for _, c := range removed {
		k := KeyOf(c.Hash)
		if r.counts[k]--; r.counts[k] <= 0 {
			delete(r.counts, k)
			r.candidates[c.Hash] = struct{}{}
		}
	}
}

// Stored notes a chunk just stored: no record may ever name it.
func (r *Refs) Stored(h chunk.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil || r.counts[KeyOf(h)] == 0 {
		r.candidates[h] = struct{}{}
	}
}

// Start is called at the moment of the snapshot the counts are built
// from: changes after it are queued until Install.
func (r *Refs) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = []refChange{}
}

// Abandon gives up a build that failed: nothing is queued any more.
func (r *Refs) Abandon() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = nil
}

// Install takes the counts built from the snapshot, applies the changes
// queued since, and makes every chunk the index held with no count a
// candidate.
func (r *Refs) Install(counts map[Key]int32, unnamed []chunk.Hash) {
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

// Built reports whether the counts are kept.
func (r *Refs) Built() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts != nil
}

// Lock holds the counts still, for a pass that decides from several.
func (r *Refs) Lock() { r.mu.Lock() }

// Unlock lets the counts change again.
func (r *Refs) Unlock() { r.mu.Unlock() }

// NamedLocked reports whether a record names chunk h; the caller holds
// the lock.
func (r *Refs) NamedLocked(h chunk.Hash) bool { return r.counts[KeyOf(h)] > 0 }

// Unnamed reports whether the counts are kept and no record names h.
func (r *Refs) Unnamed(h chunk.Hash) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts != nil && r.counts[KeyOf(h)] == 0
}

// Take returns the candidates gathered so far and starts a new set.
func (r *Refs) Take() map[chunk.Hash]struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.candidates
	r.candidates = map[chunk.Hash]struct{}{}
	return c
}

// Keep makes h a candidate of the next pass again.
func (r *Refs) Keep(h chunk.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.candidates[h] = struct{}{}
}
