package chunk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"math/rand"
	"testing"
)

// floatBytes encodes values as little-endian elements of the given dtype.
func floatBytes(dtype string, vals []float64) []byte {
	var b []byte
	for _, v := range vals {
		f := math.Float32bits(float32(v))
		switch dtype {
		case "F32":
			b = binary.LittleEndian.AppendUint32(b, f)
		case "BF16":
			b = binary.LittleEndian.AppendUint16(b, uint16(f>>16))
		case "F16": // the bits only need to be varied, not a faithful fp16
			b = binary.LittleEndian.AppendUint16(b, uint16(f>>13))
		}
	}
	return b
}

func normals(seed int64, n int, std float64) []float64 {
	r := rand.New(rand.NewSource(seed))
	out := make([]float64, n)
	for i := range out {
		out[i] = r.NormFloat64() * std
	}
	return out
}

func TestCodecRoundTripEveryDType(t *testing.T) {
	c := NewCodecs()
	special := []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, math.Copysign(0, -1),
		math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, 1e-40, math.MaxFloat32}
	vals := append(normals(1, 300000, 0.02), special...)
	inputs := map[string][]byte{}
	for _, dt := range []string{"F32", "BF16", "F16"} {
		inputs[dt] = floatBytes(dt, vals)
	}
	r := rand.New(rand.NewSource(2))
	for _, dt := range []string{"F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2", ""} {
		b := make([]byte, 100003)
		r.Read(b[:50000]) // half random, half zeros
		inputs[dt] = b
	}
	for dt, full := range inputs {
		for _, cut := range []int{0, 1, 3, 63, 64, 65, 1001, len(full) - 1, len(full)} {
			raw := full[:min(cut, len(full))]
			v := c.Encode(raw, Hint(dt))
			got, err := c.Decode(Sum(raw), v)
			if err != nil || !bytes.Equal(got, raw) {
				t.Fatalf("%s, %d bytes: round trip failed: %v", dt, len(raw), err)
			}
			into, err := c.DecodeTo(usedBuffer(len(raw)), Sum(raw), v, true)
			if err != nil || !bytes.Equal(into, raw) {
				t.Fatalf("%s, %d bytes: round trip into a buffer used before failed: %v", dt, len(raw), err)
			}
		}
	}
}

func TestPlanesCompressFloats(t *testing.T) {
	c := NewCodecs()
	for dt, maxRatio := range map[string]float64{"BF16": 0.70, "F32": 0.86} {
		raw := floatBytes(dt, normals(3, 1<<20, 0.02))
		v := c.Encode(raw, Hint(dt))
		ratio := float64(len(v)) / float64(len(raw))
		if CodecID(v[0]) != CodecPlanes || ratio > maxRatio {
			t.Errorf("%s: codec %d, ratio %.3f, want planes at most %.2f", dt, v[0], ratio, maxRatio)
		}
	}
}

func TestCorruptPayloadDetected(t *testing.T) {
	c := NewCodecs()
	raw := floatBytes("BF16", normals(4, 1<<16, 0.02))
	v := c.Encode(raw, "BF16")
	for _, pos := range []int{0, 1, 5, HeaderLen, HeaderLen + 7, len(v) / 2, len(v) - 1} {
		bad := append([]byte{}, v...)
		bad[pos] ^= 0x10
		if got, err := c.Decode(Sum(raw), bad); err == nil {
			t.Fatalf("flip at %d accepted (same bytes: %v)", pos, bytes.Equal(got, raw))
		}
	}
	if _, err := c.Decode(Sum(raw), v[:len(v)-3]); err == nil {
		t.Fatal("truncated value accepted")
	}
}

func TestPlanesMatchScalarLayout(t *testing.T) {
	// Each plane byte must be byte p of the element rotated left by one bit.
	raw := floatBytes("F32", normals(5, 1001, 1))
	for _, width := range []int{2, 4} {
		n := len(raw) / width
		planes := splitPlanes(make([]byte, n*width), raw, width, n)
		for i := 0; i < n; i++ {
			var v uint64
			for b := width - 1; b >= 0; b-- {
				v = v<<8 | uint64(raw[i*width+b])
			}
			bitsN := uint(8 * width)
			rot := (v<<1 | v>>(bitsN-1)) & (1<<bitsN - 1)
			for p := 0; p < width; p++ {
				if planes[p][i] != byte(rot>>(8*p)) {
					t.Fatalf("width %d element %d plane %d", width, i, p)
				}
			}
		}
		out := make([]byte, n*width)
		joinPlanes(out, planes, width, n)
		if !bytes.Equal(out, raw[:n*width]) {
			t.Fatalf("width %d: join does not invert split", width)
		}
	}
}

func BenchmarkPlanesBF16(b *testing.B) { benchmarkPlanes(b, "BF16") }
func BenchmarkPlanesF32(b *testing.B)  { benchmarkPlanes(b, "F32") }

func benchmarkPlanes(b *testing.B, dtype string) {
	c := NewCodecs()
	raw := floatBytes(dtype, normals(6, MaxSize/4, 0.02))
	v := c.Encode(raw, Hint(dtype))
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for range b.N {
			c.Encode(raw, Hint(dtype))
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for range b.N {
			c.byID[CodecPlanes].Decode(nil, v[HeaderLen:], len(raw))
		}
	})
}

// EncodeTo into a buffer that held another value gives what Encode gives.
func TestEncodeToReusesABuffer(t *testing.T) {
	c := NewCodecs()
	buf := c.Encode(floatBytes("F32", normals(8, 4096, 1)), "F32")
	for _, dt := range []string{"BF16", "F32", ""} {
		raw := floatBytes("F32", normals(9, 3000, 0.02))
		want := c.Encode(raw, Hint(dt))
		got, ok := c.EncodeTo(buf, raw, Hint(dt))
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("%q: EncodeTo into a used buffer differs from Encode", dt)
		}
		buf = got
	}
}

// brokenCodec encodes like planes but decodes one byte wrong: what
// EncodeTo's decode-and-compare is there to catch.
type brokenCodec struct{ Codec }

func (b brokenCodec) Decode(dst, payload []byte, rawLen int) ([]byte, error) {
	out, err := b.Codec.Decode(dst, payload, rawLen)
	if err == nil && len(out) > 0 {
		out[len(out)/2] ^= 1
	}
	return out, err
}

// A payload that does not decode to its chunk is stored raw instead, and
// said so: reads, which check the payload's checksum but not the hash of
// what they decode, never meet it.
func TestEncodeToCatchesADecoderBug(t *testing.T) {
	c := NewCodecs()
	c.byID[CodecPlanes] = brokenCodec{c.byID[CodecPlanes]}
	raw := floatBytes("BF16", normals(3, 1<<16, 0.02))
	v, ok := c.EncodeTo(nil, raw, "BF16")
	if ok || CodecID(v[0]) != CodecRaw {
		t.Fatalf("a value that decodes wrong was stored with codec %d (ok %v)", v[0], ok)
	}
	got, err := c.DecodeChecksummed(Sum(raw), v)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("the raw fallback reads back differently: %v", err)
	}
}

// BenchmarkJoinPlanes is the plane join alone, a third of a bf16 decode.
func BenchmarkJoinPlanes(b *testing.B) {
	for _, width := range []int{2, 4} {
		raw := floatBytes("F32", normals(7, planeBlock*width/4, 0.02))
		n := len(raw) / width
		planes := splitPlanes(make([]byte, n*width), raw, width, n)
		out := make([]byte, n*width)
		b.Run(fmt.Sprint(width), func(b *testing.B) {
			b.SetBytes(int64(len(out)))
			for range b.N {
				joinPlanes(out, planes, width, n)
			}
		})
	}
}

// The joins, whose bulk is a vector loop on amd64, give each element's
// rotated bytes for every count and alignment, and write nothing past
// their n elements.
func TestJoinPlanesEveryLengthAndAlignment(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	for _, width := range []int{2, 4} {
		for n := 0; n <= 100; n++ {
			for shift := 0; shift < 3; shift++ {
				planes := make([][]byte, width)
				for p := range planes {
					planes[p] = make([]byte, n+shift)
					r.Read(planes[p])
					planes[p] = planes[p][shift:]
				}
				dst := make([]byte, width*n+shift+8)
				for i := range dst {
					dst[i] = 0xA5
				}
				joinPlanes(dst[shift:], planes, width, n)
				for i := 0; i < n; i++ {
					var v uint32
					for p := width - 1; p >= 0; p-- {
						v = v<<8 | uint32(planes[p][i])
					}
					var want, got uint32
					if width == 2 {
						want, got = uint32(bits.RotateLeft16(uint16(v), -1)), uint32(binary.LittleEndian.Uint16(dst[shift+2*i:]))
					} else {
						want, got = bits.RotateLeft32(v, -1), binary.LittleEndian.Uint32(dst[shift+4*i:])
					}
					if got != want {
						t.Fatalf("width %d n %d shift %d element %d: %#x, want %#x", width, n, shift, i, got, want)
					}
				}
				for i, b := range append(dst[:shift:shift], dst[shift+width*n:]...) {
					if b != 0xA5 {
						t.Fatalf("width %d n %d shift %d: byte %d outside the elements written", width, n, shift, i)
					}
				}
			}
		}
	}
}
