package reclaim

import (
	"fmt"
	"os"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// sealPack ends appends to pack id, the current one, so that it can go
// like any other once the appends under way are indexed.
func (c *Collector) sealPack(id uint32) {
	c.Evict.Lock() // appends and their index entries happen under RLock
	if cur, appending := c.Packs.Current(); appending && cur == id {
		c.Packs.Seal()
	}
	c.Evict.Unlock()
}

// sealedPacks lists the packs not being appended to. Taken before the
// index is read, it names no pack a chunk can be appended to after, and
// every record of the packs it names is indexed by then: a chunk's append
// and its index entry happen under evictMu's read lock, so once the write
// lock was had here, a record appended to a pack that filled meanwhile
// has its entry, and the pack's live records are all in the index.
func (c *Collector) sealedPacks() ([]uint32, error) {
	c.Evict.Lock()
	ids, err := c.Packs.List()
	cur, appending := c.Packs.Current()
	c.Evict.Unlock()
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	out := ids[:0]
	for _, id := range ids {
		if !appending || id != cur {
			out = append(out, id)
		}
	}
	return out, nil
}

// sweepPacks deletes the sealed packs with no live record, and copies the
// live records of those mostly garbage to the current pack before deleting
// them.
func (c *Collector) sweepPacks(sealed []uint32, live map[uint32][]meta.Record, res *Result) error {
	var doomed []uint32
	var moved []meta.Move
	limit := newRateLimit(compactRate)
	for _, id := range sealed {
		st, err := os.Stat(c.Packs.Path(id))
		if err != nil {
			continue // evicted meanwhile
		}
		var used int64
		for _, r := range live[id] {
			used += pack.RecordHeader + int64(r.Loc.Len)
		}
		if used > 0 && float64(st.Size()-used) < packGarbageRatio*float64(st.Size()) {
			continue
		}
		m, err := c.copyRecords(live[id], limit)
		if err != nil {
			c.Log.Warn("reclaim: pack kept", "pack", c.Packs.Path(id), "err", err)
			continue
		}
		moved = append(moved, m...)
		if used > 0 {
			res.PacksRewritten++
		}
		res.PackBytesFreed += st.Size() - used
		doomed = append(doomed, id)
	}
	if len(doomed) == 0 {
		return c.DB.Sync() // the deletions of sweepChunks
	}
	return c.dropPacks(doomed, moved, res)
}

// copyRecords appends the values of recs to the current pack, with no
// index change yet.
func (c *Collector) copyRecords(recs []meta.Record, limit *rateLimit) ([]meta.Move, error) {
	var out []meta.Move
	for _, r := range recs {
		c.Evict.RLock() // the pack is not evicted while read
		var to pack.Loc
		err := c.Packs.Read(r.Hash, r.Loc, func(val []byte) error {
			if err := chunk.Check(r.Hash, val); err != nil {
				return err // a damaged record is not copied into a sound pack
			}
			var err error
			to, err = c.Packs.Append(r.Hash, val)
			return err
		})
		c.Evict.RUnlock()
		if err != nil {
			return nil, fmt.Errorf("chunk %s: %w", r.Hash.Short(), err)
		}
		out = append(out, meta.Move{Hash: r.Hash, From: r.Loc, To: to})
		limit.wait(int64(r.Loc.Len))
	}
	return out, nil
}

// dropPacks points the index at the copies of the moved records that still
// stand where they were copied from, and deletes the doomed packs: the
// copies and the new index entries are durable first, so a crash leaves
// every chunk readable from one pack or the other.
func (c *Collector) dropPacks(doomed []uint32, moved []meta.Move, res *Result) error {
	if err := c.Packs.Sync(); err != nil {
		return err
	}
	c.Evict.Lock() // no read in between, nor an eviction
	defer c.Evict.Unlock()
	if err := c.Index.Move(moved); err != nil {
		return fmt.Errorf("index copied records: %w", err)
	}
	if err := c.DB.Sync(); err != nil {
		return err
	}
	for _, id := range doomed {
		if err := c.Packs.Remove(id); err != nil {
			return err
		}
		res.PacksRemoved++
		if err := c.store.PackRemoved(id); err != nil {
			return err
		}
	}
	return nil
}

// rateLimit spaces out work to at most rate bytes a second.
type rateLimit struct {
	rate  int64
	start time.Time
	done  int64
}

func newRateLimit(rate int64) *rateLimit { return &rateLimit{rate: rate, start: time.Now()} }

func (r *rateLimit) wait(n int64) {
	r.done += n
	ahead := time.Duration(r.done*int64(time.Second)/r.rate) - time.Since(r.start)
	if ahead > 0 {
		time.Sleep(ahead)
	}
}
