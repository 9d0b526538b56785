package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/dgraph-io/badger/v4"
)

// PutChunk stores raw bytes once: a chunk already present is not written
// again, however many writers store it at the same time. It returns the
// chunk's reference.
func (s *Store) PutChunk(raw []byte, hint chunk.Hint) (chunk.Ref, error) {
	ref := chunk.Ref{Hash: chunk.Sum(raw), Len: uint32(len(raw))}
	s.metrics.logical.Add(int64(len(raw)))
	lock := &s.putLocks[ref.Hash[0]] // between the look-up and the index entry
	lock.Lock()
	defer lock.Unlock()
	loc, err := s.chunkLoc(ref.Hash)
	if err == nil && s.isSuspect(loc.Pack) {
		err = s.checkRecord(ref.Hash, loc)
	}
	if err == nil {
		s.live.touch(ref.Hash) // under the lock: a reclaim pass sees it
		return ref, nil        // dedup: already stored
	}
	if !errors.Is(err, chunk.ErrCorrupt) {
		return ref, fmt.Errorf("look up chunk %s: %w", ref.Hash.Short(), err)
	}
	start := time.Now()
	buf, _ := s.values.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	val, ok := s.chunks.codecs.EncodeTo(*buf, raw, hint)
	if !ok {
		s.log.Error("codec bug: a payload did not decode to its chunk; stored raw", "chunk", ref.Hash.String(), "hint", hint)
	}
	defer func() { *buf = val; s.values.Put(buf) }() // the pack has written it: nothing keeps it
	if err := s.ensureSpace(int64(len(val)), chunkReserve, false); err != nil {
		return ref, err
	}
	// A chunk this store writes is not in the bucket until its own upload
	// says so, whatever an imported manifest claimed (markBucketOnly).
	var clear [][]byte
	if s.cachesBucket.Load() {
		clear = append(clear, meta.UploadedKey(ref.Hash))
	}
	if err := s.storeValue(ref.Hash, val, clear...); err != nil {
		return ref, fmt.Errorf("write chunk %s: %w", ref.Hash.Short(), err)
	}
	s.live.touch(ref.Hash)
	s.backing.Stored(ref.Hash)
	since(s.metrics.storeSeconds, start)
	s.metrics.unique.Add(int64(len(raw)))
	s.metrics.stored.Add(int64(len(val)))
	return ref, nil
}

// storeValue appends a chunk value to a pack and indexes it, deleting the
// keys in clear in the same transaction. Eviction waits for both: it
// decides from the index which packs it may delete.
func (s *Store) storeValue(h chunk.Hash, val []byte, clear ...[]byte) error {
	s.evictMu.RLock()
	defer s.evictMu.RUnlock()
	loc, err := s.packs.Append(h, val)
	if err != nil {
		return err
	}
	if s.afterAppend != nil {
		s.afterAppend()
	}
	return s.db.Update(func(txn *badger.Txn) error {
		for _, k := range clear {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return txn.Set(meta.ChunkKey(h), loc.Encode())
	})
}

// checkRecord checks the record of chunk h at loc, in a pack a crash may
// have cut, before dedup trusts it: a lost record would otherwise make every
// later copy of the same bytes unreadable. A record that fails is
// ErrCorrupt; the chunk is then stored again, and its index entry moves.
func (s *Store) checkRecord(h chunk.Hash, loc pack.Loc) error {
	s.evictMu.RLock()
	defer s.evictMu.RUnlock()
	err := s.packs.Read(h, loc, func(val []byte) error { return chunk.Check(h, val) })
	if errors.Is(err, chunk.ErrCorrupt) {
		s.log.Warn("a chunk record a crash damaged is stored again", "chunk", h.String(), "pack", s.packs.Path(loc.Pack), "err", err)
	}
	return err
}

// chunkLoc looks up where a chunk is stored.
func (s *Store) chunkLoc(h chunk.Hash) (pack.Loc, error) {
	var loc pack.Loc
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(meta.ChunkKey(h))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			loc, err = pack.DecodeLoc(v)
			return err
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return loc, fmt.Errorf("chunk %s: %w: %w", h.Short(), ErrChunkMissing, chunk.ErrCorrupt)
	}
	if err != nil {
		return loc, fmt.Errorf("look up chunk %s: %w", h.Short(), err) // an I/O error stays one
	}
	return loc, nil
}

// loadChunk reads and verifies a chunk from its pack, bypassing the LRU.
// A chunk the packs lack or hold damaged is fetched from the backing.
func (s *Store) loadChunk(h chunk.Hash) ([]byte, error) {
	decode := s.chunks.codecs.DecodeChecksummed // see there why no hash
	if s.verifyReads {
		decode = s.chunks.codecs.Decode
	}
	raw, err := s.readLocal(h, decode)
	// Only a chunk the store lacks, or holds damaged, is fetched: an I/O
	// error (EMFILE, a closed database) says nothing about the copy.
	if err == nil || !errors.Is(err, chunk.ErrCorrupt) {
		return raw, err
	}
	return s.backing.Fetch(h, err)
}

// ErrChunkMissing is a chunk the index does not know.
var ErrChunkMissing = errors.New("chunk missing")

// ReadLocal reads chunk h from its pack and verifies it, its hash
// included, bypassing the LRU and the backing.
func (s *Store) ReadLocal(h chunk.Hash) ([]byte, error) {
	return s.readLocal(h, s.chunks.codecs.Decode)
}

// readLocal reads chunk h from its pack and decodes it with decode.
func (s *Store) readLocal(h chunk.Hash, decode func(chunk.Hash, []byte) ([]byte, error)) ([]byte, error) {
	s.evictMu.RLock()
	defer s.evictMu.RUnlock()
	loc, err := s.chunkLoc(h)
	if err != nil {
		return nil, err
	}
	defer since(s.metrics.decodeSeconds, time.Now())
	var raw []byte
	err = s.packs.Read(h, loc, func(val []byte) error {
		var derr error
		raw, derr = decode(h, val) // into a new slice
		return derr
	})
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", h.Short(), err)
	}
	return raw, nil
}

// ScanChunks calls fn with every stored chunk and its location, or the
// error that kept the location from being read.
func (s *Store) ScanChunks(fn func(h chunk.Hash, loc pack.Loc, err error) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{meta.PrefixChunk}, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h chunk.Hash
			copy(h[:], it.Item().Key()[1:])
			var loc pack.Loc
			err := it.Item().Value(func(v []byte) error {
				var err error
				loc, err = pack.DecodeLoc(v)
				return err
			})
			if err := fn(h, loc, err); err != nil {
				return err
			}
		}
		return nil
	})
}
