package store

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// Backing is a bucket behind the store, as the store knows it (package
// bucket implements it). Without one the store is all there is.
type Backing interface {
	// Stored is told of every chunk the store writes: write-back uploads it.
	Stored(h chunk.Hash)
	// Fetch gets chunk h, which the store lacks or holds damaged (local is
	// that error), stores it with AddFetched and returns its raw bytes; it
	// stops when ctx is done, the reader that asked gone.
	Fetch(ctx context.Context, h chunk.Hash, local error) ([]byte, error)
	// Changed is told after every committed change of the namespace.
	Changed()
	// Claim is asked before top-level name is created or renamed into
	// place: the bucket's lease of a new checkpoint.
	Claim(name string) error
	// Publish returns once the committed changes of top-level checkpoint
	// name are in the bucket.
	Publish(ctx context.Context, name string) error
	// Close ends the backing's background work; the store closes after it.
	Close() error
}

// noBacking is the backing of a store in front of nothing.
type noBacking struct{}

func (noBacking) Stored(chunk.Hash) {}
func (noBacking) Fetch(_ context.Context, _ chunk.Hash, local error) ([]byte, error) {
	return nil, local
}
func (noBacking) Changed()                              {}
func (noBacking) Claim(string) error                    { return nil }
func (noBacking) Publish(context.Context, string) error { return nil }
func (noBacking) Close() error                          { return nil }

// SetBacking puts the store in front of b and records b's bucket, url, as
// the one the store caches, for life (the backing refuses another). A
// backing sets itself before it starts work in the background, and before
// the store serves.
func (s *Store) SetBacking(b Backing, url string) error {
	if err := s.ns.SetValue(meta.KeyRemoteURL, []byte(url)); err != nil {
		return fmt.Errorf("store %s: %w", s.dir, err)
	}
	s.cachesBucket.Store(true)
	s.backing = b
	return nil
}

// Publish makes the committed changes of top-level checkpoint name visible
// in the bucket behind the store, if there is one.
func (s *Store) Publish(ctx context.Context, name string) error {
	return s.backing.Publish(ctx, name)
}

// RemoteURL is the bucket the store caches, "" if none.
func (s *Store) RemoteURL() string {
	v, _ := s.ns.Value(meta.KeyRemoteURL)
	return string(v)
}

// Uploaded reports whether the bucket is known to hold chunk h.
func (s *Store) Uploaded(h chunk.Hash) bool {
	up, _ := s.index.Uploaded(h)
	return up
}

// PendingUploads counts the chunks the store holds and the bucket behind it
// is not known to hold yet, and the bytes they take: what write-back has
// still to upload. Both are 0 for a store in front of no bucket.
func (s *Store) PendingUploads() (chunks, bytes int64, err error) {
	if s.RemoteURL() == "" {
		return 0, 0, nil
	}
	err = s.index.NotUploaded(func(h chunk.Hash, loc pack.Loc) error {
		chunks++
		bytes += int64(loc.Len)
		return nil
	})
	return chunks, bytes, err
}

// MarkUploaded records that the bucket holds the chunks: eviction may drop
// the store's copies.
func (s *Store) MarkUploaded(hs ...chunk.Hash) error {
	s.cachesBucket.Store(true)
	return s.index.MarkUploaded(hs...)
}

// MarkBucketOnly records the chunks of an imported manifest that this
// store does not hold as held by the bucket, where reads will fetch them.
// A chunk this store holds is left alone: only its own upload (or a fetch)
// may say the bucket has it, or a manifest naming a chunk the bucket lacks
// would let eviction drop this store's only copy. Stores of new chunks
// wait meanwhile (PutChunk clears the mark of a chunk it stores).
func (s *Store) MarkBucketOnly(hs []chunk.Hash) error {
	for i := range s.putLocks {
		s.putLocks[i].Lock()
		defer s.putLocks[i].Unlock()
	}
	var absent []chunk.Hash
	for _, h := range hs {
		if _, err := s.index.Get(h); errors.Is(err, meta.ErrNoChunk) {
			absent = append(absent, h)
		} else if err != nil {
			return err
		}
	}
	s.live.Touch(hs...) // the imported tree is created next
	return s.MarkUploaded(absent...)
}

// HasChunk reports whether the store holds chunk h (unverified).
func (s *Store) HasChunk(h chunk.Hash) bool {
	_, err := s.index.Get(h)
	return err == nil
}

// StoredValue reads chunk h as stored, after checking its checksum and,
// with decode, that it decodes to bytes of hash h: what a bucket holds. A
// delta comes back coded alone: a bucket holds plain values, so that any
// node reads a chunk by itself, and a bucket's reclaim or a cache's
// eviction drops one without knowing what else needs it.
func (s *Store) StoredValue(h chunk.Hash, decode bool) ([]byte, error) {
	val, _, err := s.storedValue(h)
	if err != nil {
		return nil, err
	}
	if _, isDelta := chunk.DeltaReference(val); isDelta {
		raw, err := s.readLocal(context.Background(), h, decode, nil)
		if err != nil {
			return nil, err
		}
		plain, _ := s.codecs.EncodeTo(nil, raw, chunk.HintOf(val)) // raw if the codec failed
		return plain, nil
	}
	if decode {
		if _, err := s.codecs.Decode(h, val); err != nil {
			return nil, err
		}
	}
	return val, nil
}

// AddFetched verifies val, chunk ref as a bucket stores it, against its
// hash and length, stores it as is and returns the raw bytes. A value that
// does not verify is chunk.ErrCorrupt.
func (s *Store) AddFetched(ref chunk.Ref, val []byte) ([]byte, error) {
	raw, err := s.codecs.Decode(ref.Hash, val)
	if errors.Is(err, chunk.ErrNeedsReference) {
		err = fmt.Errorf("a delta, which a bucket never holds: %w", chunk.ErrCorrupt)
	}
	if err == nil && ref.Len != 0 && len(raw) != int(ref.Len) {
		err = fmt.Errorf("%d bytes, the manifest says %d: %w", len(raw), ref.Len, chunk.ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", ref.Hash.Short(), err)
	}
	if err := s.EnsureSpace(int64(len(val)), ChunkReserve, false); err != nil {
		return nil, err
	}
	s.live.Touch(ref.Hash) // a pull's tree is created after its chunks
	if err := s.storeValue(ref.Hash, val, false); err != nil {
		return nil, fmt.Errorf("store chunk %s: %w", ref.Hash.Short(), err)
	}
	return raw, nil
}

// PackFile is a pack on disk.
type PackFile struct {
	ID        uint32
	Path      string
	Size      int64
	Appending bool // chunks are being appended to it
}

// Packs lists the packs on disk, oldest first.
func (s *Store) Packs() ([]PackFile, error) {
	ids, err := s.packs.List()
	if err != nil {
		return nil, err
	}
	cur, appending := s.packs.Current()
	var out []PackFile
	for _, id := range ids {
		path := s.packs.Path(id)
		if st, err := os.Stat(path); err == nil {
			out = append(out, PackFile{id, path, st.Size(), appending && id == cur})
		}
	}
	return out, nil
}

// SetPackTarget sets the size at which packs are sealed: a cache evicts
// whole packs, so smaller packs evict in smaller steps.
func (s *Store) SetPackTarget(n int64) { s.packs.SetTarget(min(pack.TargetSize, n)) }

// EvictPack deletes pack id if droppable says yes of every live chunk in
// it, with their index entries, and reports whether it did. No chunk is
// read from, appended to or indexed in a pack meanwhile. The index says
// which chunks are live, never the pack's bytes: a failed append can
// leave a hole that a walk of the records would misread. No reclaim pass
// runs meanwhile either: a pass's copies of records sit in a pack before
// the index lists them there, so that pack looks empty to eviction until
// the pass ends.
func (s *Store) EvictPack(id uint32, droppable func(chunk.Hash) bool) (evicted bool, err error) {
	err = s.reclaim.Exclusive(func(func(pack.Loc)) error {
		s.evictMu.Lock()
		defer s.evictMu.Unlock()
		live, err := s.index.InPack(id)
		if err != nil {
			return err
		}
		for _, r := range live {
			if !droppable(r.Hash) {
				return nil // pinned
			}
		}
		if _, err := s.index.Delete(live); err != nil { // a store in front of a bucket keeps no deltas
			return err
		}
		if err := s.packs.Remove(id); err != nil {
			return err
		}
		evicted = true
		return s.packRemoved(id)
	})
	return evicted, err
}
