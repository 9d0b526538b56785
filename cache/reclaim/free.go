package reclaim

import (
	"errors"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// freeCandidates deletes the index entries of the candidates no record
// names that Live does not keep, counts them as their packs'
// garbage, and returns the packs it freed from. Stores wait meanwhile, so
// none can find a chunk by dedup as it goes.
//
// A candidate a delta needs stays, unless every delta that needs it goes
// in this pass: versions removed together (rotations that piled up between
// two passes) go together, a chain's deltas deleted before their
// references, so that a crash in between leaves no delta without one.
func (c *Collector) freeCandidates(res *Result) (map[uint32]bool, error) {
	candidates := c.Refs.Take()
	if len(candidates) == 0 {
		return nil, nil
	}
	defer c.store.HaltStores()()
	c.Live.lock()
	defer c.Live.unlock()
	var free []meta.Record // this round's
	var needed []neededChunk
	var kept []chunk.Hash
	c.Refs.Lock()
	res.Weighed = int64(len(candidates))
	for h := range candidates {
		if c.Refs.NamedLocked(h) {
			continue
		}
		if keep, recent := c.Live.keepsLocked(h); keep {
			kept = append(kept, h)
			if recent {
				res.Recent++
			}
			continue
		}
		loc, err := c.Index.Get(h)
		if errors.Is(err, meta.ErrNoChunk) {
			continue // deleted before, or evicted to a bucket
		}
		var deps []chunk.Hash
		if err == nil && c.store.MayHoldDeltas() {
			deps, err = c.Index.Dependents(h)
		}
		if err != nil {
			c.Refs.Unlock()
			return nil, err
		}
		if len(deps) > 0 {
			needed = append(needed, neededChunk{meta.Record{Hash: h, Loc: loc}, deps})
			continue
		}
		free = append(free, meta.Record{Hash: h, Loc: loc})
	}
	c.Refs.Unlock()
	for _, h := range kept {
		c.Refs.Keep(h)
	}
	in := map[uint32]bool{}
	freed := map[chunk.Hash]bool{}
	var refs []chunk.Hash // of the deltas freed
	for round := 0; len(free) > 0; round++ {
		// A reference's deletion is written only once its deltas' are
		// durable: Badger replays each memtable file on its own, so a
		// later batch can outlive an earlier one cut by a crash.
		if round > 0 {
			if err := c.DB.Sync(); err != nil {
				return nil, err
			}
		}
		left, err := c.Index.Delete(free)
		if err != nil {
			return nil, err
		}
		refs = append(refs, left...)
		for _, r := range free {
			freed[r.Hash] = true
			in[r.Loc.Pack] = true
			c.garbage[r.Loc.Pack] += pack.RecordHeader + int64(r.Loc.Len)
			res.Chunks++
			res.ChunkBytes += int64(r.Loc.Len)
		}
		free = nil
		rest := needed[:0]
		for _, n := range needed {
			if n.neededOnlyBy(freed) {
				free = append(free, n.Record)
			} else {
				rest = append(rest, n)
			}
		}
		needed = rest
		if round == chunk.MaxChain && len(free) > 0 { // a longer chain is damage: the next pass goes on
			for _, r := range free {
				c.Refs.Keep(r.Hash)
			}
			break
		}
	}
	for _, ref := range refs { // a delta gone: its reference may be garbage now
		if !freed[ref] {
			c.Refs.Keep(ref)
		}
	}
	return in, nil
}

// neededChunk is a candidate chunk and the deltas that need it.
type neededChunk struct {
	meta.Record
	deps []chunk.Hash
}

func (n neededChunk) neededOnlyBy(freed map[chunk.Hash]bool) bool {
	for _, d := range n.deps {
		if !freed[d] {
			return false
		}
	}
	return true
}
