package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/pack"
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
	loc, err := s.index.Get(ref.Hash)
	if err == nil && s.isSuspect(loc.Pack) {
		err = s.checkRecord(ref.Hash, loc)
	}
	if err == nil {
		s.live.Touch(ref.Hash) // under the lock: a reclaim pass sees it
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
	val, ok := s.codecs.EncodeTo(*buf, raw, hint)
	if !ok {
		s.log.Error("codec bug: a payload did not decode to its chunk; stored raw", "chunk", ref.Hash.String(), "hint", hint)
	}
	defer func() { *buf = val; s.values.Put(buf) }() // the pack has written it: nothing keeps it
	if err := s.EnsureSpace(int64(len(val)), ChunkReserve, false); err != nil {
		return ref, err
	}
	// A chunk this store writes is not in the bucket until its own upload
	// says so, whatever an imported manifest claimed (markBucketOnly).
	if err := s.storeValue(ref.Hash, val, s.cachesBucket.Load()); err != nil {
		return ref, fmt.Errorf("write chunk %s: %w", ref.Hash.Short(), err)
	}
	s.live.Touch(ref.Hash)
	s.refs.Stored(ref.Hash)
	s.pacer.Kick() // garbage if no record comes to name it
	s.backing.Stored(ref.Hash)
	since(s.metrics.storeSeconds, start)
	s.metrics.unique.Add(int64(len(raw)))
	s.metrics.stored.Add(int64(len(val)))
	return ref, nil
}

// storeValue appends a chunk value to a pack and indexes it; with
// notUploaded, the mark that the bucket holds it goes in the same
// transaction. Eviction waits for both: it decides from the index which
// packs it may delete.
func (s *Store) storeValue(h chunk.Hash, val []byte, notUploaded bool) error {
	s.evictMu.RLock()
	defer s.evictMu.RUnlock()
	loc, err := s.packs.Append(h, val)
	if err != nil {
		return err
	}
	if s.afterAppend != nil {
		s.afterAppend()
	}
	return s.index.Put(h, loc, notUploaded)
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

// loadChunk reads and verifies a chunk from its pack, bypassing the LRU.
// A chunk the packs lack or hold damaged is fetched from the backing, until
// ctx is done.
func (s *Store) loadChunk(ctx context.Context, h chunk.Hash, buffer func(n int) []byte) ([]byte, error) {
	raw, err := s.readLocal(ctx, h, s.verifyReads, buffer)
	// Only a chunk the store lacks, or holds damaged, is fetched: an I/O
	// error (EMFILE, a closed database) says nothing about the copy.
	if err != nil && errors.Is(err, chunk.ErrCorrupt) {
		raw, err = s.backing.Fetch(ctx, h, err)
	}
	if err == nil {
		s.metrics.loadedBytes.Add(float64(len(raw)))
	}
	return raw, err
}

// ReadLocal reads chunk h from its pack and verifies it, its hash
// included, bypassing the LRU and the backing; a delta's references are
// read and verified the same way.
func (s *Store) ReadLocal(h chunk.Hash) ([]byte, error) {
	return s.readLocal(context.Background(), h, true, nil)
}

// readLocal reads chunk h from its pack and decodes it; verify checks the
// hash of what it decodes (see chunk.DecodeChecksummed for why a reader
// need not). A delta is decoded outside the eviction lock, against its
// reference (see decodeDelta). buffer, when not nil, gives the buffer to
// decode into (see chunkcache.Load).
func (s *Store) readLocal(ctx context.Context, h chunk.Hash, verify bool, buffer func(n int) []byte) ([]byte, error) {
	s.evictMu.RLock()
	loc, err := s.index.Get(h)
	if err != nil {
		s.evictMu.RUnlock()
		return nil, err
	}
	start := time.Now()
	var raw, delta []byte
	err = s.packs.Read(h, loc, func(val []byte) error {
		if _, ok := chunk.DeltaReference(val); ok {
			delta = append([]byte(nil), val...)
			return chunk.Check(h, val) // before the reference it names is read
		}
		var dst []byte
		if buffer != nil {
			dst = buffer(chunk.RawLen(val))
		}
		var derr error
		raw, derr = s.codecs.DecodeTo(dst, h, val, verify)
		return derr
	})
	s.evictMu.RUnlock()
	since(s.metrics.decodeSeconds, start)
	if err == nil && delta != nil {
		raw, err = s.decodeDelta(ctx, h, delta, verify)
	}
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", h.Short(), err)
	}
	return raw, nil
}

// ScanChunks calls fn with every stored chunk and its location, or the
// error that kept the location from being read.
func (s *Store) ScanChunks(fn func(h chunk.Hash, loc pack.Loc, err error) error) error {
	return s.index.Scan(fn)
}
