package chunk

import (
	"bytes"
	"errors"
	"math"
	"math/rand"
	"testing"
)

// steps is a training step of vals: each moves by about lr (an Adam step
// does not scale with the weight) and decays by lr*0.01.
func step(seed int64, vals []float64, lr float64) []float64 {
	r := rand.New(rand.NewSource(seed))
	out := make([]float64, len(vals))
	for i, v := range vals {
		out[i] = v - lr*math.Tanh(r.NormFloat64()) - lr*0.01*v
	}
	return out
}

// versions is a tensor of n weights and its next version, in dtype.
func versions(dtype string, n int, lr float64) (older, newer []byte) {
	w := normals(11, n, 0.04)
	return floatBytes(dtype, w), floatBytes(dtype, step(12, w, lr))
}

func TestDeltaRoundTrip(t *testing.T) {
	c := NewCodecs()
	special := []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, math.Copysign(0, -1),
		math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, 1e-40, math.MaxFloat32, 3, -3}
	for _, dt := range []string{"BF16", "F16", "F32", "I64", ""} {
		older, newer := versions(dt, 20000, 1e-4)
		if dt == "I64" || dt == "" {
			older, newer = versions("F32", 10000, 1e-4)
		}
		older = append(older, floatBytes("F32", special)...)
		newer = append(newer, floatBytes("F32", append(special[1:], special[0]))...)
		for _, cut := range []int{0, 1, 3, 63, 64, 65, 1001, len(newer) - 1, len(newer)} {
			raw := newer[:cut]
			for _, ref := range [][]byte{older[:cut], older, older[:cut/2], nil, newer[:cut]} {
				v, ok := c.EncodeDelta(nil, raw, Sum(ref), ref, Hint(dt))
				if !ok {
					t.Fatalf("%s, %d bytes against %d: a value did not decode", dt, cut, len(ref))
				}
				got, err := c.DecodeWith(Sum(raw), v, ref)
				if err != nil || !bytes.Equal(got, raw) {
					t.Fatalf("%s, %d bytes against %d: round trip failed: %v", dt, cut, len(ref), err)
				}
				if r, isDelta := DeltaReference(v); isDelta && (r.Hash != Sum(ref) || int(r.Len) != len(ref)) {
					t.Fatalf("%s: the value names reference %s/%d, want %s/%d", dt, r.Hash.Short(), r.Len, Sum(ref).Short(), len(ref))
				}
			}
		}
	}
}

// A step of training costs a fraction of the plain value, and the value
// names its reference.
func TestDeltaOfATrainingStep(t *testing.T) {
	c := NewCodecs()
	for dt, maxRatio := range map[string]float64{"BF16": 0.15, "F16": 0.35, "F32": 0.55} {
		n := 1 << 16
		if dt == "BF16" {
			n = MaxSize / 2 // streams of more than one block
		}
		older, newer := versions(dt, n, 1e-4)
		v, ok := c.EncodeDelta(nil, newer, Sum(older), older, Hint(dt))
		ratio := float64(len(v)) / float64(len(newer))
		ref, isDelta := DeltaReference(v)
		if !ok || !isDelta || ref.Hash != Sum(older) || ratio > maxRatio {
			t.Errorf("%s: delta %v (ok %v), ratio %.3f, want a delta of at most %.2f", dt, isDelta, ok, ratio, maxRatio)
		}
		if _, err := c.Decode(Sum(newer), v); !errors.Is(err, ErrNeedsReference) {
			t.Errorf("%s: decoded without its reference: %v", dt, err)
		}
	}
}

// A reference that has nothing to do with the chunk gives the plain value.
func TestDeltaFallsBackToPlain(t *testing.T) {
	c := NewCodecs()
	raw := floatBytes("BF16", normals(13, 1<<16, 0.02))
	ref := floatBytes("BF16", normals(14, 1<<16, 0.02))
	v, ok := c.EncodeDelta(nil, raw, Sum(ref), ref, "BF16")
	if _, isDelta := DeltaReference(v); !ok || isDelta || !bytes.Equal(v, c.Encode(raw, "BF16")) {
		t.Fatalf("an unrelated reference gave a delta (%v), or not the plain value", isDelta)
	}
}

// The wrong reference, or a damaged value, never decodes to other bytes.
func TestDeltaWrongReferenceOrDamage(t *testing.T) {
	c := NewCodecs()
	older, newer := versions("BF16", 1<<16, 1e-4)
	v, _ := c.EncodeDelta(nil, newer, Sum(older), older, "BF16")
	h := Sum(newer)
	other := append([]byte{}, older...)
	other[100] ^= 1
	if _, err := c.DecodeWith(h, v, other); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("another reference of the same length: %v", err)
	}
	if _, err := c.DecodeWith(h, v, older[:len(older)-2]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a reference of another length: %v", err)
	}
	for _, pos := range []int{0, 1, 5, HeaderLen, HeaderLen + 3, HeaderLen + 33, HeaderLen + deltaRefLen, len(v) / 2, len(v) - 1} {
		bad := append([]byte{}, v...)
		bad[pos] ^= 0x10
		if got, err := c.DecodeWith(h, bad, older); err == nil {
			t.Fatalf("flip at %d accepted (same bytes: %v)", pos, bytes.Equal(got, newer))
		}
	}
}

// brokenDelta decodes one byte wrong.
type brokenDelta struct{ deltaCoder }

func (b brokenDelta) Decode(dst, payload, ref []byte, rawLen int) ([]byte, error) {
	out, err := b.deltaCoder.Decode(dst, payload, ref, rawLen)
	if err == nil && len(out) > 0 {
		out[len(out)/3] ^= 1
	}
	return out, err
}

// A delta that does not decode to its chunk is never stored.
func TestEncodeDeltaCatchesADecoderBug(t *testing.T) {
	c := NewCodecs()
	c.delta = brokenDelta{c.delta}
	older, newer := versions("F32", 1<<14, 1e-4)
	v, ok := c.EncodeDelta(nil, newer, Sum(older), older, "F32")
	if _, isDelta := DeltaReference(v); ok || isDelta {
		t.Fatalf("a delta that decodes wrong was kept (delta %v, ok %v)", isDelta, ok)
	}
	if got, err := c.DecodeChecksummed(Sum(newer), v); err != nil || !bytes.Equal(got, newer) {
		t.Fatalf("the plain fallback reads back differently: %v", err)
	}
}

func BenchmarkDeltaBF16(b *testing.B) { benchmarkDelta(b, "BF16") }
func BenchmarkDeltaF32(b *testing.B)  { benchmarkDelta(b, "F32") }

// benchmarkDelta measures a 1 MiB chunk of a training step against the
// step before; run with -cpu 1 for one core's MB/s.
func benchmarkDelta(b *testing.B, dtype string) {
	c := NewCodecs()
	width := map[string]int{"BF16": 2, "F32": 4}[dtype]
	older, newer := versions(dtype, MaxSize/width, 1e-4)
	v, _ := c.EncodeDelta(nil, newer, Sum(older), older, Hint(dtype))
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(newer)))
		buf := make([]byte, 0, MaxStored)
		for range b.N {
			buf, _ = c.EncodeDelta(buf, newer, Sum(older), older, Hint(dtype))
		}
		b.ReportMetric(float64(len(v))/float64(len(newer)), "ratio")
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(newer)))
		for range b.N {
			if _, err := c.DecodeChecksummedWith(Sum(newer), v, older); err != nil {
				b.Fatal(err)
			}
		}
	})
}
