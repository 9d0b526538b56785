package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
)

// planesCodec is the float-aware codec (the ZipNN idea). Each element is
// rotated left by one bit, which moves the sign bit below the mantissa so
// that the exponent fills a whole byte, then the bytes of all elements are
// split into planes: bf16 and fp32 get a pure exponent plane, which is
// highly skewed in trained weights and entropy-codes well, while mantissa
// planes are close to random and usually stay raw. The chunk is worked
// through in groups of planeBlock elements, so a group's planes stay in
// cache between splitting and coding; each plane block is coded with huff0
// 4X, as a single repeated byte, or raw, whichever is smallest.
//
// Payload: element size (1 byte); then for each group, for each plane:
// mode (1 byte), coded length (uvarint), coded bytes; then the trailing
// rawLen % element size bytes as they are.
type planesCodec struct {
	scratch sync.Pool // *entropy
	buffers sync.Pool // *[]byte group plane buffers
}

const planeBlock = 128 << 10 // under huff0's 256 KiB block limit

// Block modes of a coded block of bytes.
const (
	blockRaw  = 0
	blockHuff = 1 // huff0 4X
	blockRLE  = 2
	blockFSE  = 3
)

// entropy is the scratch of the block coders, which are not safe for
// concurrent use: take one from a pool per call.
type entropy struct {
	huff huff0.Scratch
	fse  fse.Scratch
}

func newEntropy() any { return &entropy{huff: huff0.Scratch{Reuse: huff0.ReusePolicyNone}} }

func newPlanesCodec() *planesCodec {
	return &planesCodec{scratch: sync.Pool{New: newEntropy}}
}

// planeWidth is the element size the planes codec splits a dtype by; 0 for
// dtypes it does not handle.
func planeWidth(hint Hint) int {
	switch hint {
	case "BF16", "F16":
		return 2
	case "F32":
		return 4
	}
	return 0
}

// splitPlanes rotates each element left by one bit and scatters its bytes
// into planes, which hold n elements each. The bulk works on 64-bit words,
// eight elements at a time.
func splitPlanes(buf, raw []byte, width, n int) [][]byte {
	planes := make([][]byte, width)
	for p := range planes {
		planes[p] = buf[p*n : (p+1)*n]
	}
	le := binary.LittleEndian
	switch width {
	case 2:
		p0, p1 := planes[0], planes[1]
		i := 0
		for ; i+8 <= n; i += 8 { // eight elements, one 64-bit store per plane
			r := raw[2*i : 2*i+16]
			w0, w1 := rotl16(le.Uint64(r)), rotl16(le.Uint64(r[8:]))
			le.PutUint64(p0[i:i+8], uint64(gatherBytes2(w0))|uint64(gatherBytes2(w1))<<32)
			le.PutUint64(p1[i:i+8], uint64(gatherBytes2(w0>>8))|uint64(gatherBytes2(w1>>8))<<32)
		}
		for ; i < n; i++ {
			v := bits.RotateLeft16(le.Uint16(raw[2*i:]), 1)
			p0[i], p1[i] = byte(v), byte(v>>8)
		}
	case 4:
		p0, p1, p2, p3 := planes[0], planes[1], planes[2], planes[3]
		i := 0
		for ; i+8 <= n; i += 8 { // eight elements, one 64-bit store per plane
			r := raw[4*i : 4*i+32]
			w0, w1 := rotl32(le.Uint64(r)), rotl32(le.Uint64(r[8:]))
			w2, w3 := rotl32(le.Uint64(r[16:])), rotl32(le.Uint64(r[24:]))
			plane := func(k uint) uint64 {
				return uint64(gatherBytes4(w0>>k)) | uint64(gatherBytes4(w1>>k))<<16 |
					uint64(gatherBytes4(w2>>k))<<32 | uint64(gatherBytes4(w3>>k))<<48
			}
			le.PutUint64(p0[i:i+8], plane(0))
			le.PutUint64(p1[i:i+8], plane(8))
			le.PutUint64(p2[i:i+8], plane(16))
			le.PutUint64(p3[i:i+8], plane(24))
		}
		for ; i < n; i++ {
			v := bits.RotateLeft32(le.Uint32(raw[4*i:]), 1)
			p0[i], p1[i], p2[i], p3[i] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
	}
	return planes
}

// rotl16 rotates each 16-bit lane of w left by one bit.
func rotl16(w uint64) uint64 { return (w&0x7FFF7FFF7FFF7FFF)<<1 | (w>>15)&0x0001000100010001 }

// rotl32 rotates each 32-bit lane of w left by one bit.
func rotl32(w uint64) uint64 { return (w&0x7FFFFFFF7FFFFFFF)<<1 | (w>>31)&0x0000000100000001 }

// gatherBytes2 packs bytes 0, 2, 4 and 6 of w into a uint32.
func gatherBytes2(w uint64) uint32 {
	w &= 0x00FF00FF00FF00FF
	w = (w | w>>8) & 0x0000FFFF0000FFFF
	return uint32(w | w>>16)
}

// gatherBytes4 packs bytes 0 and 4 of w into a uint16.
func gatherBytes4(w uint64) uint16 {
	return uint16(w&0xFF | (w>>24)&0xFF00)
}

// interleaveBytes gives x0 y0 x1 y1 x2 y2 x3 y3 of the bytes of x and y,
// by two swaps of the middle parts of a word (a perfect shuffle).
func interleaveBytes(x, y uint32) uint64 {
	z := uint64(x) | uint64(y)<<32
	t := (z ^ z>>16) & 0x00000000FFFF0000
	z ^= t ^ t<<16
	t = (z ^ z>>8) & 0x0000FF000000FF00
	return z ^ t ^ t<<8
}

// spreadBytes4 is the inverse of gatherBytes4.
func spreadBytes4(v uint16) uint64 {
	w := uint64(v)
	return (w | w<<24) & 0x000000FF000000FF
}

// joinPlanes is the inverse of splitPlanes, writing n elements into dst.
func joinPlanes(dst []byte, planes [][]byte, width, n int) {
	le := binary.LittleEndian
	switch width {
	case 2:
		p0, p1 := planes[0][:n], planes[1][:n]
		dst = dst[:2*n]
		i := joinPlanes2Fast(dst, p0, p1, n)
		for ; i+8 <= n; i += 8 {
			// Rotate right by one bit, eight lanes a word: each low byte
			// takes the high byte's lowest bit as its top, and each high
			// byte the low byte's; then interleave the two words' bytes.
			a, b := le.Uint64(p0[i:i+8]), le.Uint64(p1[i:i+8])
			lo := (a>>1)&0x7F7F7F7F7F7F7F7F | (b&0x0101010101010101)<<7
			hi := (b>>1)&0x7F7F7F7F7F7F7F7F | (a&0x0101010101010101)<<7
			out := dst[2*i : 2*i+16]
			le.PutUint64(out, interleaveBytes(uint32(lo), uint32(hi)))
			le.PutUint64(out[8:], interleaveBytes(uint32(lo>>32), uint32(hi>>32)))
		}
		for ; i < n; i++ {
			v := uint16(p0[i]) | uint16(p1[i])<<8
			le.PutUint16(dst[2*i:], bits.RotateLeft16(v, -1))
		}
	case 4:
		p0, p1, p2, p3 := planes[0][:n], planes[1][:n], planes[2][:n], planes[3][:n]
		dst = dst[:4*n]
		i := joinPlanes4Fast(dst, p0, p1, p2, p3, n)
		for ; i+8 <= n; i += 8 {
			a0, a1 := le.Uint64(p0[i:i+8]), le.Uint64(p1[i:i+8])
			a2, a3 := le.Uint64(p2[i:i+8]), le.Uint64(p3[i:i+8])
			out := dst[4*i : 4*i+32]
			for j := 0; j < 4; j++ { // two elements per word
				sh := 16 * j
				w := spreadBytes4(uint16(a0>>sh)) | spreadBytes4(uint16(a1>>sh))<<8 |
					spreadBytes4(uint16(a2>>sh))<<16 | spreadBytes4(uint16(a3>>sh))<<24
				le.PutUint64(out[8*j:8*j+8], (w>>1)&0x7FFFFFFF7FFFFFFF|(w&0x0000000100000001)<<31) // rotr1 per lane
			}
		}
		for ; i < n; i++ {
			v := uint32(p0[i]) | uint32(p1[i])<<8 | uint32(p2[i])<<16 | uint32(p3[i])<<24
			le.PutUint32(dst[4*i:], bits.RotateLeft32(v, -1))
		}
	}
}

// buffer returns a pooled buffer for the planes of one group.
func (c *planesCodec) buffer() *[]byte {
	if b, ok := c.buffers.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 4*planeBlock)
	return &b
}

// Encode codes raw as floats of the hinted dtype, appending to dst.
func (c *planesCodec) Encode(dst, raw []byte, hint Hint) []byte {
	width := planeWidth(hint)
	n := len(raw) / width
	dst = append(dst, byte(width))
	e := c.scratch.Get().(*entropy)
	defer c.scratch.Put(e)
	buf := c.buffer()
	defer c.buffers.Put(buf)
	// A plane whose first block does not shrink (a mantissa plane, usually)
	// is not offered to huff0 again: that halves the work on bf16.
	incompressible := make([]bool, width)
	for first := 0; first < n; first += planeBlock {
		m := min(planeBlock, n-first)
		for p, block := range splitPlanes(*buf, raw[first*width:], width, m) {
			var stayedRaw bool
			dst, stayedRaw = e.appendBlock(dst, block, !incompressible[p], false)
			incompressible[p] = incompressible[p] || first == 0 && stayedRaw
		}
	}
	return append(dst, raw[n*width:]...)
}

// appendBlock appends block to dst as mode, length and bytes: coded with
// huff0 (if huff) or FSE (if useFSE), as one repeated byte, or raw,
// whichever is smallest; FSE is taken over huff0 only when it saves more
// than 1/32 (huff0 decodes faster), and tried only on blocks huff0 codes
// in under 3 bits a byte. It reports whether the block went raw.
func (e *entropy) appendBlock(dst, block []byte, huff, useFSE bool) ([]byte, bool) {
	mode, coded := byte(blockRaw), block
	if huff {
		out, _, err := huff0.Compress4X(block, &e.huff)
		switch {
		case err == nil && len(out) < len(coded):
			mode, coded = blockHuff, out
		case errors.Is(err, huff0.ErrUseRLE):
			return append(dst, blockRLE, 1, block[0]), false
		}
	}
	// FSE pays off on skewed blocks, which huff0 codes at a bit a byte or
	// more; above 3 bits a byte it saves under the 1/32 asked of it.
	if useFSE && len(block) > 1 && 8*len(coded) < 3*len(block) {
		out, err := fse.Compress(block, &e.fse)
		switch {
		case err == nil && len(out) < len(coded)-len(coded)/32:
			mode, coded = blockFSE, out
		case errors.Is(err, fse.ErrUseRLE):
			return append(dst, blockRLE, 1, block[0]), false
		}
	}
	dst = append(dst, mode)
	dst = binary.AppendUvarint(dst, uint64(len(coded)))
	return append(dst, coded...), mode == blockRaw
}

func (c *planesCodec) Decode(dst, payload []byte, rawLen int) ([]byte, error) {
	if len(payload) < 1 {
		return nil, errors.New("planes: empty payload")
	}
	width := int(payload[0])
	if width != 2 && width != 4 {
		return nil, fmt.Errorf("planes: element size %d", width)
	}
	in := payload[1:]
	n := rawLen / width
	// Every byte of out is written below (the planes, then the tail), so
	// it is grown without clearing what dst's capacity already holds.
	start := len(dst)
	dst = slices.Grow(dst, rawLen)[:start+rawLen]
	out := dst[start:]
	buf := c.buffer()
	defer c.buffers.Put(buf)
	e := c.scratch.Get().(*entropy)
	defer c.scratch.Put(e)
	planes := make([][]byte, width)
	for first := 0; first < n; first += planeBlock {
		m := min(planeBlock, n-first)
		for p := range planes {
			block := (*buf)[p*m : (p+1)*m]
			planes[p] = block
			var err error
			if in, err = e.decodeBlock(block, in); err != nil {
				return nil, err
			}
		}
		joinPlanes(out[first*width:], planes, width, m)
	}
	if len(in) != rawLen-n*width {
		return nil, errors.New("planes: trailing bytes do not match the raw length")
	}
	copy(out[n*width:], in)
	return dst, nil
}

// decodeBlock decodes one block that appendBlock coded from in into block,
// which has the block's length, and returns the rest of in.
func (e *entropy) decodeBlock(block, in []byte) ([]byte, error) {
	if len(in) < 1 {
		return nil, errors.New("block: truncated")
	}
	mode := in[0]
	size, k := binary.Uvarint(in[1:])
	if k <= 0 || size > uint64(len(in)-1-k) {
		return nil, errors.New("block: bad length")
	}
	data := in[1+k : 1+k+int(size)]
	rest := in[1+k+int(size):]
	switch mode {
	case blockRaw:
		if len(data) != len(block) {
			return nil, errors.New("block: raw size")
		}
		copy(block, data)
	case blockRLE:
		if len(data) != 1 {
			return nil, errors.New("block: rle size")
		}
		for i := range block {
			block[i] = data[0]
		}
	case blockHuff:
		table, coded, err := huff0.ReadTable(data, &e.huff)
		if err != nil {
			return nil, fmt.Errorf("block: %w", err)
		}
		// The decoder fills dst up to its capacity: give it exactly the block.
		got, err := table.Decoder().Decompress4X(block[:0:len(block)], coded)
		if err != nil {
			return nil, fmt.Errorf("block: %w", err)
		}
		if len(got) != len(block) {
			return nil, errors.New("block: decodes to the wrong size")
		}
		if &got[0] != &block[0] {
			copy(block, got)
		}
	case blockFSE:
		// The limit stops a hostile stream a little past the block's size
		// (the decoder checks it every 256 symbols).
		e.fse.DecompressLimit = len(block) + 2
		got, err := fse.Decompress(data, &e.fse)
		if err != nil {
			return nil, fmt.Errorf("block: fse: %w", err)
		}
		if len(got) != len(block) {
			return nil, errors.New("block: decodes to the wrong size")
		}
		copy(block, got)
	default:
		return nil, fmt.Errorf("block: mode %d", mode)
	}
	return rest, nil
}
