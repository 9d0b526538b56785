package chunk

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// CodecID identifies how a chunk payload is encoded. It is stored with every
// chunk, so ids are never reused.
type CodecID byte

const (
	CodecRaw    CodecID = 0
	CodecZstd   CodecID = 1
	CodecPlanes CodecID = 2 // float byte planes, see planesCodec
	CodecDelta  CodecID = 3 // difference from a reference chunk, see deltaCodec
)

// Codec compresses chunk payloads. Encode appends the payload for raw to
// dst; Decode gets the exact raw length back.
type Codec interface {
	Encode(dst, raw []byte, hint Hint) []byte
	Decode(dst, payload []byte, rawLen int) ([]byte, error)
}

// deltaCoder codes a chunk against a reference chunk (see deltaCodec).
type deltaCoder interface {
	Encode(dst, raw, ref []byte, hint Hint) []byte
	Decode(dst, payload, ref []byte, rawLen int) ([]byte, error)
}

// Hint tells the codec chooser what a chunk holds: a safetensors dtype name
// ("BF16") for tensor bytes, empty for anything else.
type Hint string

// Codecs holds the codec implementations by id, and the delta codec,
// which also needs a reference chunk.
type Codecs struct {
	byID    map[CodecID]Codec
	delta   deltaCoder
	decoded sync.Pool // *[]byte: where EncodeTo decodes what it encoded
	plain   sync.Pool // *[]byte: where EncodeDelta builds the value it weighs a delta against
}

// NewCodecs makes the codecs every store uses.
func NewCodecs() *Codecs {
	return &Codecs{
		byID:  map[CodecID]Codec{CodecRaw: rawCodec{}, CodecZstd: newZstdCodec(64 << 20), CodecPlanes: newPlanesCodec()},
		delta: newDeltaCodec(),
	}
}

// choose picks the codec for a chunk from what it holds: float tensors get
// byte planes (zstd finds nothing in float bits), everything else zstd.
func choose(raw []byte, hint Hint) CodecID {
	if planeWidth(hint) > 0 && len(raw) >= 64 {
		return CodecPlanes
	}
	return CodecZstd
}

// Encode builds the stored value of a chunk: header, then the payload of
// the chosen codec, or of raw when compression saves less than 1/32.
func (c *Codecs) Encode(raw []byte, hint Hint) []byte {
	v, _ := c.EncodeTo(nil, raw, hint)
	return v
}

// EncodeTo is Encode into buf's memory when it is large enough (a writer
// reuses one buffer for value after value). A payload is decoded again and
// compared with raw before it is returned, and stored raw if it differs (a
// codec bug; ok reports it): reads then need not hash what they decode (see
// DecodeChecksummed).
func (c *Codecs) EncodeTo(buf, raw []byte, hint Hint) (v []byte, ok bool) {
	id := choose(raw, hint)
	if need := HeaderLen + len(raw) + len(raw)/16 + 64; cap(buf) < need {
		buf = make([]byte, HeaderLen, need)
	}
	v = c.byID[id].Encode(buf[:HeaderLen], raw, hint)
	ok = true
	switch {
	case len(v)-HeaderLen >= len(raw)-len(raw)/32:
		id = CodecRaw
	case !c.decodesTo(raw, func(dst []byte) ([]byte, error) { return c.byID[id].Decode(dst, v[HeaderLen:], len(raw)) }):
		id, ok = CodecRaw, false
	}
	if id == CodecRaw {
		v = append(v[:HeaderLen], raw...)
	}
	return seal(v, id, len(raw)), ok
}

// decodesTo reports whether decode, which appends to the slice it is
// given, gives raw.
func (c *Codecs) decodesTo(raw []byte, decode func(dst []byte) ([]byte, error)) bool {
	scratch, _ := c.decoded.Get().(*[]byte)
	if scratch == nil {
		scratch = new([]byte)
	}
	defer c.decoded.Put(scratch)
	got, err := decode((*scratch)[:0])
	if cap(got) > cap(*scratch) {
		*scratch = got[:0]
	}
	return err == nil && bytes.Equal(got, raw)
}

func (c *Codecs) decode(dst []byte, id CodecID, payload []byte, rawLen int) ([]byte, error) {
	codec, ok := c.byID[id]
	if !ok {
		return nil, fmt.Errorf("unknown codec %d", id)
	}
	return codec.Decode(dst, payload, rawLen)
}

type rawCodec struct{}

func (rawCodec) Encode(dst, raw []byte, _ Hint) []byte { return append(dst, raw...) }
func (rawCodec) Decode(dst, payload []byte, rawLen int) ([]byte, error) {
	if len(payload) != rawLen {
		return nil, fmt.Errorf("raw payload is %d bytes, want %d", len(payload), rawLen)
	}
	return append(dst, payload...), nil
}

// zstdCodec shares one encoder and decoder; both are safe for concurrent
// EncodeAll/DecodeAll. The decoder refuses a frame that would decode to
// more than maxOut bytes.
type zstdCodec struct {
	once   sync.Once
	maxOut uint64
	enc    *zstd.Encoder
	dec    *zstd.Decoder
}

func newZstdCodec(maxOut uint64) *zstdCodec { return &zstdCodec{maxOut: maxOut} }

func (z *zstdCodec) init() {
	z.once.Do(func() {
		z.enc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		z.dec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(z.maxOut))
	})
}

func (z *zstdCodec) Encode(dst, raw []byte, _ Hint) []byte {
	z.init()
	return z.enc.EncodeAll(raw, dst)
}

func (z *zstdCodec) Decode(dst, payload []byte, rawLen int) ([]byte, error) {
	z.init()
	if dst == nil {
		dst = make([]byte, 0, rawLen)
	}
	out, err := z.dec.DecodeAll(payload, dst)
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if len(out)-len(dst) != rawLen {
		return nil, fmt.Errorf("zstd payload decodes to %d bytes, want %d", len(out)-len(dst), rawLen)
	}
	return out, nil
}
