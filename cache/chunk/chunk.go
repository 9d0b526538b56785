// Package chunk is what a stored chunk is, with no storage of its own: its
// identity (the BLAKE3-256 hash of its raw bytes), its stored value format
// (codec, raw length, CRC-32C of the payload, payload) and the codecs.
package chunk

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/zeebo/blake3"
)

// Hash is the BLAKE3-256 digest of a chunk's raw bytes: its identity.
type Hash [32]byte

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short is the first 12 hex digits, for logs.
func (h Hash) Short() string { return hex.EncodeToString(h[:6]) }

// Ref is one chunk of a file: its hash and raw length.
type Ref struct {
	Hash Hash
	Len  uint32
}

// ErrCorrupt marks data that failed verification. Readers turn it into EIO.
var ErrCorrupt = errors.New("corrupt data")

// MaxSize is the largest chunk the ingest pipeline produces.
const MaxSize = 1 << 20

// MaxStored bounds a stored chunk value: the largest chunk, its header and
// what a codec that does not pay may add.
const MaxStored = MaxSize + HeaderLen + MaxSize/16 + 64

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Chunk value layout: codec (1 byte), raw length (4), CRC-32C of the
// payload (4), payload. The CRC catches a damaged payload before it reaches
// a decoder; the hash of the decoded bytes is checked against the key. A
// delta's payload starts with its reference (see DeltaReference).
const HeaderLen = 9

// seal fills in the header of v, whose payload follows HeaderLen reserved
// bytes.
func seal(v []byte, codec CodecID, rawLen int) []byte {
	v[0] = byte(codec)
	binary.LittleEndian.PutUint32(v[1:], uint32(rawLen))
	binary.LittleEndian.PutUint32(v[5:], crc32.Checksum(v[HeaderLen:], castagnoli))
	return v
}

// Check checks a stored chunk value's payload against its checksum.
func Check(h Hash, v []byte) error {
	if len(v) < HeaderLen {
		return fmt.Errorf("chunk %s: value of %d bytes: %w", h.Short(), len(v), ErrCorrupt)
	}
	if crc32.Checksum(v[HeaderLen:], castagnoli) != binary.LittleEndian.Uint32(v[5:]) {
		return fmt.Errorf("chunk %s: payload checksum mismatch: %w", h.Short(), ErrCorrupt)
	}
	return nil
}

// Decode verifies and decodes a stored chunk value of chunk h into a new
// slice: the payload's checksum, then the hash of the bytes decoded. A
// delta value fails with ErrNeedsReference: see DecodeWith.
func (c *Codecs) Decode(h Hash, v []byte) ([]byte, error) { return c.DecodeWith(h, v, nil) }

// DecodeWith is Decode of a value that may be a delta (see EncodeDelta):
// ref holds the raw bytes of the chunk DeltaReference(v) names, and is
// ignored for other values. The hash check covers a wrong ref too.
func (c *Codecs) DecodeWith(h Hash, v, ref []byte) ([]byte, error) {
	raw, err := c.DecodeChecksummedWith(h, v, ref)
	return hashed(h, raw, err)
}

// hashed passes on what a decode of chunk h returned if its bytes have
// hash h.
func hashed(h Hash, raw []byte, err error) ([]byte, error) {
	if err == nil && Sum(raw) != h {
		return nil, fmt.Errorf("chunk %s: content hash mismatch: %w", h.Short(), ErrCorrupt)
	}
	return raw, err
}

// DecodeTo is DecodeChecksummed, or Decode when verify, of a value that is
// not a delta, into dst's room: a buffer used again, as a fresh one is
// zeroed first. dst is empty; the bytes go to a new slice when it has too
// little room.
func (c *Codecs) DecodeTo(dst []byte, h Hash, v []byte, verify bool) ([]byte, error) {
	raw, err := c.decodeChecksummed(dst, h, v, nil)
	if verify {
		return hashed(h, raw, err)
	}
	return raw, err
}

// RawLen is the length value v says it decodes to, unchecked: for sizing
// a buffer before DecodeTo checks it.
func RawLen(v []byte) int {
	if len(v) < HeaderLen {
		return 0
	}
	return int(binary.LittleEndian.Uint32(v[1:]))
}

// DecodeChecksummed is Decode without the hash of the decoded bytes: the
// payload's checksum catches damage on disk, the record's hash a misplaced
// index entry (see pack), and EncodeTo decoded every value once before it
// was stored, so a value this store wrote and that checks decodes to its
// chunk. Values from elsewhere (a bucket) and fsck take Decode.
func (c *Codecs) DecodeChecksummed(h Hash, v []byte) ([]byte, error) {
	return c.DecodeChecksummedWith(h, v, nil)
}

// DecodeChecksummedWith is DecodeChecksummed of a value that may be a
// delta, against ref: it trusts ref to be the bytes of the reference
// chunk (decoded and checked as this chunk is).
func (c *Codecs) DecodeChecksummedWith(h Hash, v, ref []byte) ([]byte, error) {
	return c.decodeChecksummed(nil, h, v, ref)
}

func (c *Codecs) decodeChecksummed(dst []byte, h Hash, v, ref []byte) ([]byte, error) {
	if err := Check(h, v); err != nil {
		return nil, err
	}
	codec, rawLen := CodecID(v[0]), int(binary.LittleEndian.Uint32(v[1:]))
	payload := v[HeaderLen:]
	if rawLen > 64<<20 {
		return nil, fmt.Errorf("chunk %s: raw length %d: %w", h.Short(), rawLen, ErrCorrupt)
	}
	var raw []byte
	var err error
	if codec == CodecDelta {
		raw, err = c.decodeDelta(payload, ref, rawLen)
	} else {
		raw, err = c.decode(dst, codec, payload, rawLen)
	}
	if errors.Is(err, ErrNeedsReference) {
		return nil, fmt.Errorf("chunk %s: %w", h.Short(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %v: %w", h.Short(), err, ErrCorrupt)
	}
	return raw, nil
}

// Sum is the hash of raw bytes.
func Sum(raw []byte) Hash { return blake3.Sum256(raw) }

// MarshalText writes a hash as hex, for manifests.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads a hex hash.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) {
		return fmt.Errorf("hash %q: want %d hex digits", b, 2*len(h))
	}
	_, err := hex.Decode(h[:], b)
	return err
}
