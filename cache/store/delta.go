package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// chainDepth is the context key of the deltas a read is inside of.
type chainDepth struct{}

// decodeDelta decodes v, a checked delta value of chunk h, against its
// reference: read with readLocal when verify, else as a reader loads a
// chunk (the LRU, the packs, then the backing).
func (s *Store) decodeDelta(ctx context.Context, h chunk.Hash, v []byte, verify bool) ([]byte, error) {
	ref, _ := chunk.DeltaReference(v)
	depth, _ := ctx.Value(chainDepth{}).(int)
	if depth >= chunk.MaxChain {
		return nil, fmt.Errorf("a delta chain longer than %d: %w", chunk.MaxChain, chunk.ErrCorrupt)
	}
	ctx = context.WithValue(ctx, chainDepth{}, depth+1)
	var refRaw []byte
	var err error
	switch cached, ok := s.chunks.Peek(ref.Hash); {
	case verify:
		cached.Release()
		refRaw, err = s.readLocal(ctx, ref.Hash, true, nil)
	case ok:
		defer cached.Release()
		refRaw = cached.Data
	default:
		refRaw, err = s.loadChunk(ctx, ref.Hash, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("delta against %s: %w", ref.Hash.Short(), err)
	}
	defer since(s.metrics.decodeSeconds, time.Now())
	if verify {
		return s.codecs.DecodeWith(h, v, refRaw)
	}
	return s.codecs.DecodeChecksummedWith(h, v, refRaw)
}

// DeltaPair asks for chunk Chunk, a tensor's bytes in one version, to be
// stored as a delta against Ref, the same bytes in the version saved
// after it.
type DeltaPair struct{ Chunk, Ref chunk.Hash }

// DeltaResult is what StoreAsDeltas did.
type DeltaResult struct {
	Stored        int   // chunks now stored as deltas
	Before, After int64 // their stored bytes before and after
	RawBytes      int64 // their raw bytes
}

// StoreAsDeltas stores the chunks of pairs as deltas against their
// references where that saves at least an eighth of their value (see
// chunk.EncodeDelta), keeps the chains chunk.MaxChain deep at most and free of
// loops, and leaves alone a chunk already a delta, one no record names,
// and every chunk of a store in front of a bucket (a bucket holds plain
// values, and eviction drops whole packs). A delta is decoded and compared
// before it is stored, durable before the index names it, and indexed with
// its dependency in one transaction: a crash leaves either value, and a
// reference stays while a delta needs it (see freeCandidates). It runs
// alone, and stops when ctx is done.
func (s *Store) StoreAsDeltas(ctx context.Context, pairs []DeltaPair) (DeltaResult, error) {
	var res DeltaResult
	if s.readOnly || s.cachesBucket.Load() {
		return res, nil
	}
	s.deltaMu.Lock()
	defer s.deltaMu.Unlock()
	buf, _ := s.values.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	defer s.values.Put(buf)
	// A reclaim pass that rewrites a pack meanwhile moves chunks under
	// their encoding, and rebase leaves those: the pass after a round of
	// deltas rewrites the packs that round left garbage in, while the
	// next version is encoded. They are encoded once more, from where
	// they are now.
	moved, err := s.storeAsDeltas(ctx, pairs, buf, &res)
	if err == nil && len(moved) > 0 {
		_, err = s.storeAsDeltas(ctx, moved, buf, &res)
	}
	return res, err
}

// storeAsDeltas is one pass of StoreAsDeltas over pairs; it returns the
// pairs whose chunk left the place it was encoded from before the index
// could name the delta.
func (s *Store) storeAsDeltas(ctx context.Context, pairs []DeltaPair, buf *[]byte, res *DeltaResult) (moved []DeltaPair, err error) {
	var batch []meta.Rebased
	inBatch := map[chunk.Hash]bool{} // chunks and references of batch
	rawLen := map[chunk.Hash]int64{}
	var pinned []chunk.Hash
	flush := func() error {
		defer func() { s.live.Unpin(pinned); pinned = nil }()
		if len(batch) == 0 {
			return nil
		}
		left, err := s.rebase(batch, rawLen, res)
		moved = append(moved, left...)
		batch, inBatch, rawLen = batch[:0], map[chunk.Hash]bool{}, map[chunk.Hash]int64{}
		return err
	}
	for _, p := range pairs {
		if err := ctx.Err(); err != nil {
			return moved, errors.Join(err, flush())
		}
		if inBatch[p.Chunk] || inBatch[p.Ref] { // its chain is the batch's to change first
			if err := flush(); err != nil {
				return moved, err
			}
		}
		s.live.Pin([]chunk.Hash{p.Chunk, p.Ref})
		pinned = append(pinned, p.Chunk, p.Ref)
		r, n, ok, err := s.encodeDelta(ctx, p, buf)
		if err != nil {
			return moved, errors.Join(fmt.Errorf("delta of chunk %s: %w", p.Chunk.Short(), err), flush())
		}
		if ok {
			batch = append(batch, r)
			inBatch[p.Chunk], inBatch[p.Ref] = true, true
			rawLen[p.Chunk] = n
		}
		if len(batch) == 256 {
			if err := flush(); err != nil {
				return moved, err
			}
		}
	}
	return moved, flush()
}

// encodeDelta appends chunk p.Chunk, of n raw bytes, to the current pack
// as a delta against p.Ref, if it may be one and that saves enough.
func (s *Store) encodeDelta(ctx context.Context, p DeltaPair, buf *[]byte) (r meta.Rebased, n int64, ok bool, err error) {
	if p.Chunk == p.Ref || s.refs.Unnamed(p.Chunk) { // garbage soon
		return r, 0, false, nil
	}
	if may, err := s.mayRebase(p); !may || err != nil {
		return r, 0, false, err
	}
	val, from, err := s.storedValue(p.Chunk)
	if errors.Is(err, chunk.ErrCorrupt) {
		return r, 0, false, nil // gone meanwhile, or damaged: readers will say
	}
	if err != nil {
		return r, 0, false, err
	}
	if _, isDelta := chunk.DeltaReference(val); isDelta {
		return r, 0, false, nil
	}
	raw, err := s.codecs.DecodeChecksummed(p.Chunk, val)
	if err != nil {
		return r, 0, false, nil
	}
	ref, err := s.chunks.Get(ctx, p.Ref)
	if err != nil {
		return r, 0, false, nil
	}
	v, sound := s.codecs.DeltaBelow(*buf, raw, p.Ref, ref.Data, chunk.HintOf(val), len(val))
	ref.Release()
	if v != nil {
		*buf = v
	}
	if !sound {
		s.log.Error("codec bug: a delta did not decode to its chunk; left as it was", "chunk", p.Chunk.String(), "reference", p.Ref.String())
		return r, 0, false, nil
	}
	if v == nil {
		return r, 0, false, nil // saves too little
	}
	if err := s.EnsureSpace(int64(len(v)), ChunkReserve, false); err != nil {
		return r, 0, false, err
	}
	s.evictMu.RLock()
	to, err := s.packs.Append(p.Chunk, v)
	s.evictMu.RUnlock()
	if err != nil {
		return r, 0, false, err
	}
	return meta.Rebased{Hash: p.Chunk, Ref: p.Ref, From: from, To: to}, int64(len(raw)), true, nil
}

// mayRebase reports whether p.Chunk may become a delta against p.Ref: the
// reference's chain, one delta more, and the longest chain below p.Chunk
// stay chunk.MaxChain deep at most, and the reference does not depend on
// p.Chunk (a loop no read could decode).
func (s *Store) mayRebase(p DeltaPair) (bool, error) {
	depth := 0 // deltas from p.Ref down to a plain value
	for h := p.Ref; ; {
		if h == p.Chunk {
			return false, nil
		}
		ref, ok, err := s.index.Reference(h)
		if err != nil || !ok {
			if err != nil {
				return false, err
			}
			break
		}
		if depth++; depth >= chunk.MaxChain {
			return false, nil
		}
		h = ref
	}
	below, err := s.height(p.Chunk, chunk.MaxChain)
	return err == nil && depth+1+below <= chunk.MaxChain, err
}

// height is how many deltas deep the chains below h go, counted up to
// limit; more than limit dependents in all count as too deep.
func (s *Store) height(h chunk.Hash, limit int) (int, error) {
	level, seen := []chunk.Hash{h}, 0
	for height := 0; ; height++ {
		var next []chunk.Hash
		for _, d := range level {
			deps, err := s.index.Dependents(d)
			if err != nil {
				return 0, err
			}
			next = append(next, deps...)
		}
		if seen += len(next); len(next) == 0 || height >= limit || seen > 4096 {
			if len(next) > 0 {
				return limit + 1, nil
			}
			return height, nil
		}
		level = next
	}
}

// rebase makes the index name the delta copies of batch, once they are
// durable, and counts what each leaves behind as its pack's garbage. It
// returns the pairs whose chunk is indexed elsewhere now than where it
// was encoded from.
func (s *Store) rebase(batch []meta.Rebased, rawLen map[chunk.Hash]int64, res *DeltaResult) (moved []DeltaPair, err error) {
	if err := s.packs.Sync(); err != nil {
		return nil, fmt.Errorf("sync deltas: %w", err)
	}
	// No reclaim frees a reference between the check and the index.
	err = s.reclaim.Exclusive(func(left func(pack.Loc)) error {
		if s.beforeRebase != nil {
			s.beforeRebase()
		}
		s.evictMu.Lock() // no read between the old location and the new
		done, err := s.index.Rebase(batch)
		s.evictMu.Unlock()
		if err != nil {
			return fmt.Errorf("index deltas: %w", err)
		}
		s.hasDeltas.Store(true)
		rebased := map[chunk.Hash]bool{}
		for _, r := range done {
			rebased[r.Hash] = true
			res.Stored++
			res.Before += int64(r.From.Len)
			res.After += int64(r.To.Len)
			res.RawBytes += rawLen[r.Hash]
		}
		for _, r := range batch {
			if rebased[r.Hash] {
				left(r.From)
				continue
			}
			left(r.To) // the copy: the chunk went meanwhile
			if loc, err := s.index.Get(r.Hash); err == nil && loc != r.From {
				moved = append(moved, DeltaPair{Chunk: r.Hash, Ref: r.Ref})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.pacer.Kick()
	return moved, nil
}

// storedValue is a copy of chunk h's value as stored, checked, and where
// it is.
func (s *Store) storedValue(h chunk.Hash) ([]byte, pack.Loc, error) {
	s.evictMu.RLock()
	defer s.evictMu.RUnlock()
	loc, err := s.index.Get(h)
	if err != nil {
		return nil, loc, err
	}
	var val []byte
	err = s.packs.Read(h, loc, func(v []byte) error {
		if err := chunk.Check(h, v); err != nil {
			return err
		}
		val = append([]byte(nil), v...)
		return nil
	})
	return val, loc, err
}

// DeltaProblems checks the dependencies the index records: each delta is
// stored as a delta against the reference recorded, which is indexed or
// in the bucket. (Its chain is read, and bounded, when it is verified.)
func (s *Store) DeltaProblems() ([]string, error) {
	var out []string
	err := s.index.References(func(h, ref chunk.Hash) error {
		val, _, err := s.storedValue(h)
		if errors.Is(err, meta.ErrNoChunk) {
			return nil // a deletion cut short left the key: harmless
		}
		if err != nil {
			out = append(out, fmt.Sprintf("delta %s: %v", h, err))
			return nil
		}
		if got, ok := chunk.DeltaReference(val); !ok || got.Hash != ref {
			out = append(out, fmt.Sprintf("chunk %s: recorded as a delta against %s, stored otherwise", h, ref))
		}
		if _, err := s.index.Get(ref); err != nil && !s.Uploaded(ref) {
			out = append(out, fmt.Sprintf("delta %s: its reference %s: %v", h, ref, err))
		}
		return nil
	})
	return out, err
}
