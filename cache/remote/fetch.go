package remote

import (
	"context"
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Fetch gets chunk h from the bucket for a reader of the store, which
// lacks it or holds it damaged (local says which), until the reader's ctx
// or the backing is done. A chunk that does not verify is
// chunk.ErrCorrupt: EIO.
func (b *Backing) Fetch(ctx context.Context, h chunk.Hash, local error) ([]byte, error) {
	if !errors.Is(local, meta.ErrNoChunk) {
		b.log.Warn("local copy of a chunk is bad; fetching it from the bucket", "chunk", h.String(), "err", local)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(b.ctx, cancel)() // the backing closing stops it too
	b.metrics.fetchesInFlight.Inc()
	raw, n, err := fetchChunk(ctx, b.s, b.r, chunk.Ref{Hash: h})
	b.metrics.fetchesInFlight.Dec()
	if err != nil {
		return nil, fmt.Errorf("fetch %w", err)
	}
	b.metrics.fetchedBytes.Add(float64(n))
	if err := b.s.MarkUploaded(h); err != nil {
		return nil, err
	}
	b.kickEvict()
	return raw, nil
}

// fetchChunk gets chunk ref from r, verifies it against its hash and
// length and stores it in s as is. It returns the raw bytes and the stored
// bytes moved.
func fetchChunk(ctx context.Context, s Local, r *Remote, ref chunk.Ref) ([]byte, int64, error) {
	val, err := r.Get(ctx, r.ChunkKey(ref.Hash), chunk.MaxStored)
	if err != nil {
		return nil, 0, fmt.Errorf("chunk %s: %w", ref.Hash.Short(), err)
	}
	raw, err := s.AddFetched(ref, val)
	if errors.Is(err, chunk.ErrCorrupt) {
		return nil, 0, fmt.Errorf("%s in %s: %w", r.ChunkKey(ref.Hash), r, err)
	}
	if err != nil {
		return nil, 0, err
	}
	return raw, int64(len(val)), nil
}
