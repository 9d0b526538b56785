package cache

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/zeebo/blake3"
)

// Hash is the BLAKE3-256 digest of a chunk's raw bytes: its identity.
type Hash [32]byte

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short is the first 12 hex digits, for logs.
func (h Hash) Short() string { return hex.EncodeToString(h[:6]) }

// ChunkRef is one chunk of a file: its hash and raw length.
type ChunkRef struct {
	Hash Hash
	Len  uint32
}

// ErrCorrupt marks data that failed verification. Readers turn it into EIO.
var ErrCorrupt = errors.New("corrupt data")

// MaxChunk is the largest chunk the ingest pipeline produces.
const MaxChunk = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Chunk value layout: codec (1 byte), raw length (4), CRC-32C of the
// payload (4), payload. The CRC catches a damaged payload before it reaches
// a decoder; the hash of the decoded bytes is checked against the key.
const chunkHeaderLen = 9

// sealChunk fills in the header of v, whose payload follows chunkHeaderLen
// reserved bytes.
func sealChunk(v []byte, codec CodecID, rawLen int) []byte {
	v[0] = byte(codec)
	binary.LittleEndian.PutUint32(v[1:], uint32(rawLen))
	binary.LittleEndian.PutUint32(v[5:], crc32.Checksum(v[chunkHeaderLen:], castagnoli))
	return v
}

// checkChunk checks a stored chunk value's payload against its checksum.
func checkChunk(h Hash, v []byte) error {
	if len(v) < chunkHeaderLen {
		return fmt.Errorf("chunk %s: value of %d bytes: %w", h.Short(), len(v), ErrCorrupt)
	}
	if crc32.Checksum(v[chunkHeaderLen:], castagnoli) != binary.LittleEndian.Uint32(v[5:]) {
		return fmt.Errorf("chunk %s: payload checksum mismatch: %w", h.Short(), ErrCorrupt)
	}
	return nil
}

// decodeChunk verifies and decodes a stored chunk value.
func (c *codecs) decodeChunk(h Hash, v []byte) ([]byte, error) {
	if err := checkChunk(h, v); err != nil {
		return nil, err
	}
	codec, rawLen := CodecID(v[0]), int(binary.LittleEndian.Uint32(v[1:]))
	payload := v[chunkHeaderLen:]
	if rawLen > 64<<20 {
		return nil, fmt.Errorf("chunk %s: raw length %d: %w", h.Short(), rawLen, ErrCorrupt)
	}
	raw, err := c.decode(codec, payload, rawLen)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %v: %w", h.Short(), err, ErrCorrupt)
	}
	if hashOf(raw) != h {
		return nil, fmt.Errorf("chunk %s: content hash mismatch: %w", h.Short(), ErrCorrupt)
	}
	return raw, nil
}

func hashOf(raw []byte) Hash { return blake3.Sum256(raw) }

func chunkKey(h Hash) []byte { return append([]byte{prefixChunk}, h[:]...) }

// PutChunk stores raw bytes once: a chunk already present is not written
// again, however many writers store it at the same time. It returns the
// chunk's reference.
func (s *Store) PutChunk(raw []byte, hint Hint) (ChunkRef, error) {
	ref := ChunkRef{Hash: hashOf(raw), Len: uint32(len(raw))}
	s.metrics.logical.Add(int64(len(raw)))
	key := chunkKey(ref.Hash)
	lock := &s.putLocks[ref.Hash[0]] // between the look-up and the index entry
	lock.Lock()
	defer lock.Unlock()
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(key)
		return err
	})
	if err == nil {
		return ref, nil // dedup: already stored
	}
	if !errors.Is(err, badger.ErrKeyNotFound) {
		return ref, fmt.Errorf("look up chunk %s: %w", ref.Hash.Short(), err)
	}
	start := time.Now()
	val := s.chunks.codecs.encodeChunk(raw, hint)
	if err := s.ensureSpace(int64(len(val)), chunkReserve); err != nil {
		return ref, err
	}
	// A chunk this store writes is not in the bucket until its own upload
	// says so, whatever an imported manifest claimed (markBucketOnly).
	if err := s.storeValue(ref.Hash, val, []byte(prefixUploaded+string(ref.Hash[:]))); err != nil {
		return ref, fmt.Errorf("write chunk %s: %w", ref.Hash.Short(), err)
	}
	if s.bucket != nil {
		s.bucket.queueUpload(ref.Hash)
	}
	since(s.metrics.storeSeconds, start)
	s.metrics.unique.Add(int64(len(raw)))
	s.metrics.stored.Add(int64(len(val)))
	return ref, nil
}

// storeValue appends a chunk value to a pack and indexes it, deleting the
// keys in clear in the same transaction. Eviction waits for both: it
// decides from the index which packs it may delete.
func (s *Store) storeValue(h Hash, val []byte, clear ...[]byte) error {
	s.evictMu.RLock()
	defer s.evictMu.RUnlock()
	loc, err := s.packs.append(h, val)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error {
		for _, k := range clear {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return txn.Set(chunkKey(h), loc.encode())
	})
}

// chunkLoc looks up where a chunk is stored.
func (s *Store) chunkLoc(h Hash) (packLoc, error) {
	var loc packLoc
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(chunkKey(h))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			loc, err = decodePackLoc(v)
			return err
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return loc, fmt.Errorf("chunk %s: %w: %w", h.Short(), errChunkMissing, ErrCorrupt)
	}
	if err != nil {
		return loc, fmt.Errorf("look up chunk %s: %w", h.Short(), err) // an I/O error stays one
	}
	return loc, nil
}

// loadChunk reads and verifies a chunk from its pack, bypassing the LRU.
// In front of a bucket, a chunk the packs lack or hold damaged is fetched.
func (s *Store) loadChunk(h Hash) ([]byte, error) {
	s.evictMu.RLock()
	raw, err := s.loadLocalChunk(h)
	s.evictMu.RUnlock()
	// Only a chunk the store lacks, or holds damaged, is fetched: an I/O
	// error (EMFILE, a closed database) says nothing about the copy.
	if err == nil || s.bucket == nil || !errors.Is(err, ErrCorrupt) {
		return raw, err
	}
	if !errors.Is(err, errChunkMissing) {
		s.log.Warn("local copy of a chunk is bad; fetching it from the bucket", "chunk", h.String(), "err", err)
	}
	s.metrics.fetchesInFlight.Inc()
	raw, n, err := s.fetchChunk(s.bucket.ctx, s.bucket.r, ChunkRef{Hash: h})
	s.metrics.fetchesInFlight.Dec()
	if err != nil {
		return nil, fmt.Errorf("fetch %w", err) // a chunk that does not verify is ErrCorrupt: EIO
	}
	s.metrics.fetchedBytes.Add(float64(n))
	if err := s.markUploaded(h); err != nil {
		return nil, err
	}
	s.bucket.kickEvict()
	return raw, nil
}

// errChunkMissing is a chunk the index does not know.
var errChunkMissing = errors.New("chunk missing")

func (s *Store) loadLocalChunk(h Hash) ([]byte, error) {
	loc, err := s.chunkLoc(h)
	if err != nil {
		return nil, err
	}
	defer since(s.metrics.decodeSeconds, time.Now())
	var raw []byte
	err = s.packs.read(h, loc, func(val []byte) error {
		var derr error
		raw, derr = s.chunks.codecs.decodeChunk(h, val) // into a new slice
		return derr
	})
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", h.Short(), err)
	}
	return raw, nil
}
