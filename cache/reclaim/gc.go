package reclaim

import (
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/dgraph-io/badger/v4"
)

// GC is Pass for a store nothing else uses: it also deletes the inode
// records no directory reaches (a crash can leave them), rewrites the pack
// last appended to, and flattens Badger's tables so that its value-log GC
// returns what the deletions freed.
func (c *Collector) GC() (*Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Packs.Seal() // records copied below go to a pack that is not a candidate
	sealed, err := c.sealedPacks()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	inodes, chunks, err := c.reachable()
	if err != nil {
		return nil, fmt.Errorf("gc mark: %w", err)
	}
	res := &Result{}
	wb := c.DB.NewWriteBatch()
	defer wb.Cancel()
	err = c.NS.InodeKeys(func(key []byte) error {
		if ino, ok := meta.InodeOfKey(key); !ok || inodes[ino] {
			return nil
		}
		res.Inodes++
		return wb.Delete(key)
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("gc sweep: %w", err)
	}
	live, err := c.sweepChunks(chunks, res)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	if err := c.sweepPacks(sealed, live, res); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	// Compaction turns deletions into discard statistics the value-log GC uses.
	if err := c.Compactor.Flatten(); err != nil {
		c.Log.Warn("gc: flatten", "err", err)
	}
	for {
		err := c.DB.RunValueLogGC(0.3)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("gc value log: %w", err)
		}
		res.ValueLogRewrites++
	}
	return res, nil
}

// reachable walks the namespace from the root and returns every reachable
// inode number and every chunk a reachable file references.
func (c *Collector) reachable() (map[uint64]bool, map[chunk.Hash]struct{}, error) {
	inodes := map[uint64]bool{meta.RootIno: true}
	chunks := map[chunk.Hash]struct{}{}
	err := c.NS.Walk(meta.RootIno, func(rel string, in *meta.Inode) error {
		inodes[in.Ino] = true
		for _, c := range in.Content.Chunks {
			chunks[c.Hash] = struct{}{}
		}
		return nil
	})
	return inodes, chunks, err
}

// sweepChunks deletes the index entries of the chunks not in referenced
// that Live does not keep, and returns the live records by pack.
// Stores wait meanwhile, so none can find a chunk by dedup as it goes.
func (c *Collector) sweepChunks(referenced map[chunk.Hash]struct{}, res *Result) (map[uint32][]meta.Record, error) {
	live := map[uint32][]meta.Record{}
	var dead []meta.Record
	err := c.Index.Scan(func(h chunk.Hash, loc pack.Loc, err error) error {
		switch _, ok := referenced[h]; {
		case err != nil:
			c.Log.Warn("reclaim: chunk left in place", "chunk", h.String(), "err", err)
		case ok:
			live[loc.Pack] = append(live[loc.Pack], meta.Record{Hash: h, Loc: loc})
		default:
			dead = append(dead, meta.Record{Hash: h, Loc: loc})
		}
		return nil
	})
	if err != nil || len(dead) == 0 {
		return live, err
	}
	refOf := map[chunk.Hash]chunk.Hash{}
	if err := c.Index.References(func(h, ref chunk.Hash) error { refOf[h] = ref; return nil }); err != nil {
		return live, err
	}
	defer c.store.HaltStores()()
	c.Live.lock()
	defer c.Live.unlock()
	var doomed []meta.Record
	for _, r := range dead {
		if keep, recent := c.Live.keepsLocked(r.Hash); keep {
			live[r.Loc.Pack] = append(live[r.Loc.Pack], r)
			referenced[r.Hash] = struct{}{}
			if recent {
				res.Recent++
			}
			continue
		}
		doomed = append(doomed, r)
	}
	needed := NeededReferences(referenced, refOf)
	var freed []meta.Record
	for _, r := range doomed {
		if _, ok := needed[r.Hash]; ok {
			live[r.Loc.Pack] = append(live[r.Loc.Pack], r)
			continue
		}
		freed = append(freed, r)
		res.Chunks++
		res.ChunkBytes += int64(r.Loc.Len)
	}
	_, err = c.Index.Delete(freed) // what they needed is not kept above
	return live, err
}

// NeededReferences are the chunks the deltas among kept need, and what
// those need in turn, as refOf (each delta's reference) says.
func NeededReferences(kept map[chunk.Hash]struct{}, refOf map[chunk.Hash]chunk.Hash) map[chunk.Hash]struct{} {
	needed := map[chunk.Hash]struct{}{}
	if len(refOf) == 0 {
		return needed
	}
	for h := range kept {
		for steps := 0; steps <= chunk.MaxChain; steps++ { // a longer chain is damage: fsck says so
			ref, ok := refOf[h]
			if !ok {
				break
			}
			if _, seen := needed[ref]; seen {
				break
			}
			needed[ref] = struct{}{}
			h = ref
		}
	}
	return needed
}
