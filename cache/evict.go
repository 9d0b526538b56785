package cache

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// Eviction keeps the chunk packs under BackingOptions.DiskBytes. Packs go
// whole, oldest first, and only when the bucket holds every live chunk in
// them (a chunk not uploaded yet pins its pack): their index entries are
// dropped and the file deleted. A chunk read again is fetched again.

// evictCheckInterval also catches packs that reads filled.
const evictCheckInterval = 5 * time.Second

func (b *bucketBacking) kickEvict() {
	select {
	case b.evictCh <- struct{}{}:
	default:
	}
}

// evict deletes the oldest evictable packs until the packs fit the bound.
func (b *bucketBacking) evict(context.Context) error {
	if b.opts.DiskBytes <= 0 {
		return nil
	}
	ids, err := b.s.packs.List()
	if err != nil {
		return err
	}
	sizes := map[uint32]int64{}
	var total int64
	for _, id := range ids {
		if st, err := os.Stat(b.s.packs.Path(id)); err == nil {
			sizes[id] = st.Size()
			total += st.Size()
		}
	}
	cur, appending := b.s.packs.Current()
	for _, id := range ids {
		if total <= b.opts.DiskBytes {
			break
		}
		if appending && id == cur {
			continue
		}
		ok, err := b.evictPack(id)
		if err != nil {
			return fmt.Errorf("pack %08x: %w", id, err)
		}
		if ok {
			total -= sizes[id]
			b.s.metrics.evictedBytes.Add(float64(sizes[id]))
		}
	}
	return nil
}

// evictPack drops pack id if the bucket holds all its live chunks. The
// index says which those are, never the pack's bytes: a failed append can
// leave a hole that a walk of the records would misread.
func (b *bucketBacking) evictPack(id uint32) (bool, error) {
	s := b.s
	s.evictMu.Lock() // no read, and no append and index, in between
	defer s.evictMu.Unlock()
	live, err := s.indexedIn(id)
	if err != nil {
		return false, err
	}
	for _, h := range live {
		if !s.uploaded(h) {
			return false, nil // pinned
		}
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, h := range live {
		if err := wb.Delete(meta.ChunkKey(h)); err != nil {
			return false, err
		}
	}
	if err := wb.Flush(); err != nil {
		return false, err
	}
	return true, s.packs.Remove(id)
}

// indexedIn lists the chunks the index places in pack id.
func (s *Store) indexedIn(id uint32) ([]chunk.Hash, error) {
	var out []chunk.Hash
	err := s.scanChunks(func(h chunk.Hash, loc pack.Loc, err error) error {
		if err == nil && loc.Pack == id {
			out = append(out, h)
		}
		return nil
	})
	return out, err
}
