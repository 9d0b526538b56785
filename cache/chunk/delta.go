package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"sync"
)

// MaxChain bounds the deltas one read decodes: a chunk is at most MaxChain
// deltas away from a plain value, so its read costs at most MaxChain delta
// decodes after the plain one, and holds at most MaxChain values and
// references (MaxSize each) at once. A chain longer than that, which only a
// damaged or hostile store holds, is ErrCorrupt, not a deeper read.
const MaxChain = 8

// deltaCodec codes a chunk as its difference from a reference chunk: the
// same tensor bytes in a neighbouring version of a checkpoint. Between two
// steps of training the sign and exponent of a weight rarely change and
// the mantissa moves by a few units in the last place (ULPs), by about
// lr / 2^exponent: so each element's difference is taken as an integer,
// and it is coded knowing the reference element's exponent.
//
// Float elements (BF16, F16, F32 hints): d = zigzag(cur - ref), a wrapping
// integer subtraction of the bit patterns, with the sign moved to bit 0;
// d's bytes are split into planes, and each plane into 16 streams by the
// exponent of the reference element (2^-15 and below, each power of two
// up to 2^-1, 1 and above), so every stream holds differences of one
// magnitude; each stream is coded with FSE, huff0 4X, as one repeated
// byte, or raw, whichever is smallest (FSE only when it saves over 1/32:
// huff0 decodes faster). Other bytes: XOR with the reference, then zstd.
//
// Chosen by measurement: MiniLM fine-tuned with AdamW (make bench-delta's
// runs), steps 0-1, 2-3 and 4-5, each 1 MiB chunk of the newer step
// against the same chunk of the older; stored / raw of the newer chunks:
//
//	                                                 lr 5e-5        lr 3e-4
//	                                                bf16    fp32    bf16
//	the newer chunk alone (planes codec)           0.665   0.824   0.665
//	XOR, planes codec (huff0)                      0.133   0.391   0.202
//	XOR, zstd fastest                              0.107   0.569   0.183
//	XOR, zstd best                                 0.084   0.437   0.165
//	XOR, byte planes, zstd best                    0.070   0.357   0.141
//	XOR, byte planes, FSE                          0.058   0.344   0.126
//	XOR, planes by reference exponent, FSE         0.043   0.323   0.096
//	sub, byte planes, zstd best                    0.060   0.280   0.116
//	sub, byte planes, huff0                        0.121   0.298   0.175
//	sub, byte planes, FSE                          0.050   0.268   0.107
//	sub, planes by reference exponent, huff0       0.075   0.248   0.106
//	sub, planes by reference exponent, FSE         0.032   0.233   0.069  (kept)
//	rotate left 1, then sub, the same              0.032   0.235   0.069
//	order-0 entropy of the kept streams            0.031   0.230   0.067
//
// (sub: zigzag of the integer difference.) Subtraction beats XOR: a carry
// into a higher mantissa bit flips many bits of the XOR but changes the
// difference by one. Huff0 spends at least a bit on every symbol, which
// mostly-zero planes cannot afford; FSE (tANS) codes them in fractions of
// a bit. The reference's exponent sets the size of the difference (an Adam
// step is about lr whatever the weight, so lr / 2^exponent ULPs): splitting
// the streams by it saves a third on bf16. 16 exponent buckets do as well
// as 256 (bf16 low plane, steps 2-3: 0.0312 and 0.0313 of raw) with fewer
// tables; conditioning a plane also on the planes above it saved under
// 0.5% and was not kept. The kept coder is within 3% of the order-0
// entropy of its streams. What fp32 keeps is the low mantissa of each
// step, noise no transform removes.
//
// Payload: kind (1 byte); for floats, for each plane from the lowest, for
// each exponent bucket the reference has elements in, the stream in blocks
// of at most deltaBlock bytes (see appendBlock), then the len(raw) % width
// trailing bytes as they are; for other bytes, a zstd frame. The decoder
// counts the buckets from the reference, so stream lengths are not stored.
// Elements past the end of a shorter reference are taken against zeros;
// a longer reference's extra bytes are ignored.
type deltaCodec struct {
	zstd    *zstdCodec
	scratch sync.Pool // *entropy
	buffers sync.Pool // *[]byte: byte planes, a zero-padded reference
}

// Kinds of delta payload.
const (
	deltaBytes = 0 // XOR with the reference, zstd
	deltaBF16  = 1
	deltaF16   = 2
	deltaF32   = 3
)

const (
	deltaBuckets = 16
	deltaBlock   = planeBlock // bytes a coded block of a stream holds at most
)

func newDeltaCodec() *deltaCodec {
	return &deltaCodec{zstd: newZstdCodec(MaxSize), scratch: sync.Pool{New: newEntropy}}
}

// deltaKind is the payload kind and element width for a hint.
func deltaKind(hint Hint) (kind byte, width int) {
	switch hint {
	case "BF16":
		return deltaBF16, 2
	case "F16":
		return deltaF16, 2
	case "F32":
		return deltaF32, 4
	}
	return deltaBytes, 1
}

func kindWidth(kind byte) (int, error) {
	switch kind {
	case deltaBytes:
		return 1, nil
	case deltaBF16, deltaF16:
		return 2, nil
	case deltaF32:
		return 4, nil
	}
	return 0, fmt.Errorf("delta: kind %d", kind)
}

// A bucketing finds an element's exponent bucket: table[x>>shift&0xFF].
// The buckets are the same powers of two for every dtype: 2^-15 and below
// in the first, each power up to 2^-1, then 1 and above in the last.
type bucketing struct {
	shift uint
	table [256]uint8
}

var bucketings = func() (b [deltaF32 + 1]bucketing) {
	b[deltaBF16].shift, b[deltaF16].shift, b[deltaF32].shift = 7, 10, 23
	for i := range 256 {
		e8 := uint8(min(max(i-(127-deltaBuckets+1), 0), deltaBuckets-1)) // 8-bit exponent, bias 127
		b[deltaBF16].table[i], b[deltaF32].table[i] = e8, e8
		b[deltaF16].table[i] = uint8(min(i&0x1F, deltaBuckets-1)) // 5-bit exponent, bias 15; sign above it
	}
	return b
}()

// streams lays out the exponent buckets of the reference's elements: where
// each bucket's stream starts in a plane, and its length.
type streams struct {
	start, count [deltaBuckets]int
}

func layoutStreams(bk *bucketing, ref []byte, w int) streams {
	// Four histograms, so that runs of one bucket do not wait on the
	// same counter.
	var c [4][deltaBuckets]int
	n := len(ref) / w
	le := binary.LittleEndian
	i := 0
	if w == 2 {
		for ; i+4 <= n; i += 4 {
			e := le.Uint64(ref[2*i:])
			c[0][bk.table[uint16(e)>>bk.shift&0xFF]]++
			c[1][bk.table[uint16(e>>16)>>bk.shift&0xFF]]++
			c[2][bk.table[uint16(e>>32)>>bk.shift&0xFF]]++
			c[3][bk.table[uint16(e>>48)>>bk.shift&0xFF]]++
		}
		for ; i < n; i++ {
			c[0][bk.table[le.Uint16(ref[2*i:])>>bk.shift&0xFF]]++
		}
	} else {
		for ; i+2 <= n; i += 2 {
			e := le.Uint64(ref[4*i:])
			c[0][bk.table[uint32(e)>>bk.shift&0xFF]]++
			c[1][bk.table[uint32(e>>32)>>bk.shift&0xFF]]++
		}
		for ; i < n; i++ {
			c[0][bk.table[le.Uint32(ref[4*i:])>>bk.shift&0xFF]]++
		}
	}
	var s streams
	for b := range deltaBuckets {
		s.count[b] = c[0][b] + c[1][b] + c[2][b] + c[3][b]
		if b > 0 {
			s.start[b] = s.start[b-1] + s.count[b-1]
		}
	}
	return s
}

// scatter2 writes zigzag(raw - ref) of each 2-byte element into the byte
// planes p0 and p1, each element at the next place of its bucket's stream.
func scatter2(p0, p1, raw, ref []byte, bk *bucketing, next [deltaBuckets]int) {
	for i := 0; i+1 < len(ref); i += 2 {
		r := uint16(ref[i]) | uint16(ref[i+1])<<8
		d := int16(uint16(raw[i]) | uint16(raw[i+1])<<8 - r)
		z := uint16(d<<1 ^ d>>15)
		b := bk.table[r>>bk.shift&0xFF]
		at := next[b]
		next[b]++
		p0[at], p1[at] = byte(z), byte(z>>8)
	}
}

// gather2 is the inverse of scatter2, writing the elements into out.
func gather2(out, p0, p1, ref []byte, bk *bucketing, next [deltaBuckets]int) {
	for i := 0; i+1 < len(ref); i += 2 {
		r := uint16(ref[i]) | uint16(ref[i+1])<<8
		b := bk.table[r>>bk.shift&0xFF]
		at := next[b]
		next[b]++
		z := uint16(p0[at]) | uint16(p1[at])<<8
		v := r + (z>>1 ^ -(z & 1))
		out[i], out[i+1] = byte(v), byte(v>>8)
	}
}

// scatter4 is scatter2 for 4-byte elements, into planes p[0..3].
func scatter4(p [4][]byte, raw, ref []byte, bk *bucketing, next [deltaBuckets]int) {
	le := binary.LittleEndian
	for i := 0; i+3 < len(ref); i += 4 {
		r := le.Uint32(ref[i:])
		d := int32(le.Uint32(raw[i:]) - r)
		z := uint32(d<<1 ^ d>>31)
		b := bk.table[r>>bk.shift&0xFF]
		at := next[b]
		next[b]++
		p[0][at], p[1][at], p[2][at], p[3][at] = byte(z), byte(z>>8), byte(z>>16), byte(z>>24)
	}
}

// gather4 is the inverse of scatter4.
func gather4(out []byte, p [4][]byte, ref []byte, bk *bucketing, next [deltaBuckets]int) {
	le := binary.LittleEndian
	for i := 0; i+3 < len(ref); i += 4 {
		r := le.Uint32(ref[i:])
		b := bk.table[r>>bk.shift&0xFF]
		at := next[b]
		next[b]++
		z := uint32(p[0][at]) | uint32(p[1][at])<<8 | uint32(p[2][at])<<16 | uint32(p[3][at])<<24
		le.PutUint32(out[i:], r+(z>>1^-(z&1)))
	}
}

// frame is the work of coding one chunk's floats: the reference's
// exponent buckets, and the byte planes of the differences, in a pooled
// buffer.
type frame struct {
	streams
	bk     *bucketing
	buf    *[]byte
	planes [4][]byte
}

// newFrame lays out the differences of n elements of width w against ref.
func (d *deltaCodec) newFrame(kind byte, ref []byte, w, n int) frame {
	f := frame{bk: &bucketings[kind], buf: d.buffer(w * n)}
	f.streams = layoutStreams(f.bk, ref, w)
	for i := range w {
		f.planes[i] = (*f.buf)[i*n : (i+1)*n]
	}
	return f
}

// blocks yields the blocks of the payload in order: for each plane from
// the lowest, each bucket's stream in pieces of at most deltaBlock.
func (f *frame) blocks(w int) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for _, plane := range f.planes[:w] {
			for b := range deltaBuckets {
				stream := plane[f.start[b] : f.start[b]+f.count[b]]
				for len(stream) > 0 {
					block := stream[:min(len(stream), deltaBlock)]
					stream = stream[len(block):]
					if !yield(block) {
						return
					}
				}
			}
		}
	}
}

// buffer is a pooled buffer of n bytes.
func (d *deltaCodec) buffer(n int) *[]byte {
	b, _ := d.buffers.Get().(*[]byte)
	if b == nil {
		b = new([]byte)
	}
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	*b = (*b)[:n]
	return b
}

// paddedRef is ref cut or zero-padded to n bytes, in buf if it must be
// padded.
func paddedRef(ref []byte, n int, buf *[]byte) []byte {
	if len(ref) >= n {
		return ref[:n]
	}
	clear((*buf)[copy(*buf, ref):])
	return *buf
}

// Encode appends the delta payload of raw against ref to dst.
func (d *deltaCodec) Encode(dst, raw, ref []byte, hint Hint) []byte {
	kind, w := deltaKind(hint)
	pad := d.buffer(len(raw))
	defer d.buffers.Put(pad)
	ref = paddedRef(ref, len(raw), pad)
	dst = append(dst, kind)
	if kind == deltaBytes {
		x := d.buffer(len(raw))
		defer d.buffers.Put(x)
		for i := range raw {
			(*x)[i] = raw[i] ^ ref[i]
		}
		return d.zstd.Encode(dst, *x, "")
	}
	n := len(raw) / w
	ref = ref[:n*w]
	f := d.newFrame(kind, ref, w, n)
	defer d.buffers.Put(f.buf)
	if w == 2 {
		scatter2(f.planes[0], f.planes[1], raw, ref, f.bk, f.start)
	} else {
		scatter4(f.planes, raw, ref, f.bk, f.start)
	}
	e := d.scratch.Get().(*entropy)
	defer d.scratch.Put(e)
	for block := range f.blocks(w) {
		dst, _ = e.appendBlock(dst, block, true, true)
	}
	return append(dst, raw[n*w:]...)
}

// Decode decodes a delta payload against ref into rawLen bytes appended to
// dst. It allocates in proportion to rawLen, whatever the payload holds;
// the caller bounds rawLen.
func (d *deltaCodec) Decode(dst, payload, ref []byte, rawLen int) ([]byte, error) {
	if len(payload) < 1 {
		return nil, errors.New("delta: empty payload")
	}
	kind := payload[0]
	w, err := kindWidth(kind)
	if err != nil {
		return nil, err
	}
	in := payload[1:]
	pad := d.buffer(rawLen)
	defer d.buffers.Put(pad)
	ref = paddedRef(ref, rawLen, pad)
	if kind == deltaBytes {
		start := len(dst)
		out, err := d.zstd.Decode(dst, in, rawLen)
		if err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
		for i, x := range out[start:] {
			out[start+i] = x ^ ref[i]
		}
		return out, nil
	}
	n := rawLen / w
	ref = ref[:n*w]
	f := d.newFrame(kind, ref, w, n)
	defer d.buffers.Put(f.buf)
	e := d.scratch.Get().(*entropy)
	defer d.scratch.Put(e)
	for block := range f.blocks(w) {
		if in, err = e.decodeBlock(block, in); err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
	}
	if len(in) != rawLen-n*w {
		return nil, errors.New("delta: trailing bytes do not match the raw length")
	}
	start := len(dst)
	dst = append(dst, make([]byte, rawLen)...)
	out := dst[start:]
	if w == 2 {
		gather2(out, f.planes[0], f.planes[1], ref, f.bk, f.start)
	} else {
		gather4(out, f.planes, ref, f.bk, f.start)
	}
	copy(out[n*w:], in)
	return dst, nil
}

// A delta value's payload starts with its reference chunk's hash (32
// bytes) and raw length (4), under the value's CRC; the delta follows.
const deltaRefLen = len(Hash{}) + 4

// ErrNeedsReference is the error for decoding a delta value without the
// raw bytes of its reference chunk.
var ErrNeedsReference = errors.New("delta value decoded without its reference chunk")

// DeltaReference is the chunk a stored value is a delta against, if it is
// a delta. Check the value first: the CRC covers the reference.
func DeltaReference(v []byte) (Ref, bool) {
	if len(v) < HeaderLen+deltaRefLen || CodecID(v[0]) != CodecDelta {
		return Ref{}, false
	}
	var r Ref
	copy(r.Hash[:], v[HeaderLen:])
	r.Len = binary.LittleEndian.Uint32(v[HeaderLen+len(r.Hash):])
	return r, true
}

// HintOf is the hint a checked value was coded with, as far as the value
// tells, to code its chunk again: a delta's dtype, the element size of
// planes (4 bytes: F32; 2: BF16, so an F16 tensor's delta is as exact and
// less compact); "" otherwise.
func HintOf(v []byte) Hint {
	if len(v) <= HeaderLen {
		return ""
	}
	switch CodecID(v[0]) {
	case CodecPlanes:
		switch v[HeaderLen] {
		case 2:
			return "BF16"
		case 4:
			return "F32"
		}
	case CodecDelta:
		if len(v) > HeaderLen+deltaRefLen {
			switch v[HeaderLen+deltaRefLen] {
			case deltaBF16:
				return "BF16"
			case deltaF16:
				return "F16"
			case deltaF32:
				return "F32"
			}
		}
	}
	return ""
}

// deltaGain is how much smaller than the plain value a delta must be to be
// kept: a delta costs its reader the reference's decode, and its store the
// reference's space for as long as the delta lives.
const deltaGain = 8 // 1/8

// EncodeDelta is EncodeTo of raw as a delta against the chunk ref, whose raw
// bytes are refRaw (same length or not). It gives the plain value instead
// when the delta does not save at least an eighth of it, when either chunk
// is over MaxSize, or when the delta does not decode to raw against refRaw
// (a codec bug, which ok reports as EncodeTo does). DeltaReference(v) tells
// which it gave; the chunk's identity stays Sum(raw) either way.
func (c *Codecs) EncodeDelta(buf, raw []byte, ref Hash, refRaw []byte, hint Hint) (v []byte, ok bool) {
	v, ok = c.EncodeTo(buf, raw, hint)
	scratch, _ := c.plain.Get().(*[]byte)
	if scratch == nil {
		scratch = new([]byte)
	}
	defer c.plain.Put(scratch)
	d, sound := c.DeltaBelow(*scratch, raw, ref, refRaw, hint, len(v))
	if d == nil {
		return v, ok && sound
	}
	*scratch = d
	return append(v[:0], d...), ok
}

// DeltaBelow is raw's value as a delta against the chunk ref (refRaw its
// bytes), built in buf, if it saves at least an eighth of plainLen, the
// size of its plain value; nil if not, if either chunk is over MaxSize, or
// if the delta does not decode to raw (a codec bug, which ok reports).
// For a caller that has the plain value already: EncodeDelta without
// encoding it again.
func (c *Codecs) DeltaBelow(buf, raw []byte, ref Hash, refRaw []byte, hint Hint, plainLen int) (v []byte, ok bool) {
	if len(raw) > MaxSize || len(refRaw) > MaxSize {
		return nil, true
	}
	d := append(buf[:0], make([]byte, HeaderLen)...)
	d = append(d, ref[:]...)
	d = binary.LittleEndian.AppendUint32(d, uint32(len(refRaw)))
	d = c.delta.Encode(d, raw, refRaw, hint)
	if len(d) >= plainLen-plainLen/deltaGain {
		return nil, true
	}
	if !c.decodesTo(raw, func(dst []byte) ([]byte, error) {
		return c.delta.Decode(dst, d[HeaderLen+deltaRefLen:], refRaw, len(raw))
	}) {
		return nil, false
	}
	return seal(d, CodecDelta, len(raw)), true
}

// decodeDelta decodes a delta value's payload against ref.
func (c *Codecs) decodeDelta(payload, ref []byte, rawLen int) ([]byte, error) {
	if len(payload) < deltaRefLen {
		return nil, errors.New("delta: no reference")
	}
	if ref == nil {
		return nil, ErrNeedsReference
	}
	refLen := int(binary.LittleEndian.Uint32(payload[len(Hash{}):]))
	if len(ref) != refLen {
		return nil, fmt.Errorf("delta: reference of %d bytes, want %d", len(ref), refLen)
	}
	if rawLen > MaxSize || refLen > MaxSize {
		return nil, fmt.Errorf("delta: %d bytes against %d, over %d", rawLen, refLen, MaxSize)
	}
	return c.delta.Decode(nil, payload[deltaRefLen:], ref, rawLen)
}
