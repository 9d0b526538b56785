package remote

import (
	"context"
	"fmt"
	"time"
)

// Eviction keeps the chunk packs under Options.DiskBytes. Packs go whole,
// oldest first, and only when the bucket holds every live chunk in them (a
// chunk not uploaded yet pins its pack). A chunk read again is fetched
// again.

// evictCheckInterval also catches packs that reads filled.
const evictCheckInterval = 5 * time.Second

func (b *Backing) kickEvict() {
	select {
	case b.evictCh <- struct{}{}:
	default:
	}
}

// evict deletes the oldest evictable packs until the packs fit the bound.
func (b *Backing) evict(context.Context) error {
	if b.opts.DiskBytes <= 0 {
		return nil
	}
	packs, err := b.s.Packs()
	if err != nil {
		return err
	}
	var total int64
	for _, p := range packs {
		total += p.Size
	}
	for _, p := range packs {
		if total <= b.opts.DiskBytes {
			break
		}
		if p.Appending {
			continue
		}
		ok, err := b.s.EvictPack(p.ID, b.s.Uploaded)
		if err != nil {
			return fmt.Errorf("pack %08x: %w", p.ID, err)
		}
		if ok {
			total -= p.Size
			b.metrics.evictedBytes.Add(float64(p.Size))
		}
	}
	return nil
}
