package chunk

import (
	"bytes"
	"runtime"
	"testing"
)

// FuzzChunkRoundTrip: every chunk decodes to itself, whatever its hint,
// and a payload with a flipped bit is refused.
func FuzzChunkRoundTrip(f *testing.F) {
	f.Add([]byte("hello hello hello hello"), "")
	f.Add(make([]byte, 1000), "BF16")
	f.Add([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef!"), "F32")
	f.Add([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"), "F16")
	c := NewCodecs()
	f.Fuzz(func(t *testing.T, raw []byte, hint string) {
		v := c.Encode(raw, Hint(hint))
		h := Sum(raw)
		got, err := c.Decode(h, v)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("round trip: %v", err)
		}
		if got, err := c.DecodeTo(usedBuffer(len(raw)), h, v, false); err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("round trip into a buffer used before: %v", err)
		}
		if len(v) > HeaderLen {
			v[len(v)-1] ^= 1
			if _, err := c.Decode(h, v); err == nil {
				t.Fatal("corrupted payload accepted")
			}
		}
	})
}

// FuzzDeltaRoundTrip: a chunk coded against any reference, of any length,
// decodes to itself against it, as a payload and as a stored value, and a
// flipped bit of the value is refused. The reference is the chunk with
// edits added in (so that deltas are small) cut or grown to refLen.
func FuzzDeltaRoundTrip(f *testing.F) {
	older, newer := versions("BF16", 300, 1e-4)
	f.Add(newer, []byte{}, uint16(len(older)), "BF16")
	older, newer = versions("F32", 300, 1e-4)
	f.Add(newer, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0x80}, uint16(len(older)-5), "F32")
	f.Add(newer[:601], []byte{3, 0, 0xFF}, uint16(700), "F16")
	f.Add([]byte("hello hello hello hello"), []byte{0, 0, 1}, uint16(20), "")
	c := NewCodecs()
	f.Fuzz(func(t *testing.T, raw, edits []byte, refLen uint16, hint string) {
		ref := make([]byte, int(refLen)%(len(raw)+64))
		copy(ref, raw)
		for i, e := range edits {
			if len(ref) > 0 {
				ref[i*7%len(ref)] += e
			}
		}
		payload := c.delta.Encode(nil, raw, ref, Hint(hint))
		got, err := c.delta.Decode(nil, payload, ref, len(raw))
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("payload round trip: %v", err)
		}
		h := Sum(raw)
		v, ok := c.EncodeDelta(nil, raw, Sum(ref), ref, Hint(hint))
		if got, err := c.DecodeWith(h, v, ref); !ok || err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("value round trip (ok %v): %v", ok, err)
		}
		if len(v) > HeaderLen {
			v[len(v)-1] ^= 1
			if _, err := c.DecodeWith(h, v, ref); err == nil {
				t.Fatal("corrupted payload accepted")
			}
		}
	})
}

// FuzzDeltaDecode: a hostile delta payload, against any reference, fails
// or decodes to rawLen bytes, never panics, and costs memory in proportion
// to rawLen however it lies.
func FuzzDeltaDecode(f *testing.F) {
	c := NewCodecs()
	for _, dt := range []string{"BF16", "F32", "F16", ""} {
		older, newer := versions(dt, 5000, 1e-3)
		if dt == "" {
			older, newer = versions("F32", 5000, 1e-3)
		}
		p := c.delta.Encode(nil, newer, older, Hint(dt))
		f.Add(p, older, uint32(len(newer)))
		f.Add(p[:len(p)/2], older, uint32(len(newer)))
		f.Add(p, older[:100], uint32(len(newer)))
	}
	f.Add([]byte{deltaBF16, blockFSE, 0xFF, 0xFF, 0x03}, make([]byte, 1<<19), uint32(MaxSize))
	f.Add([]byte{deltaBytes, 0x28, 0xB5, 0x2F, 0xFD, 0, 0x58, 0, 0, 0}, []byte{}, uint32(1000))
	f.Fuzz(func(t *testing.T, payload, ref []byte, rawLen uint32) {
		n := int(rawLen % (MaxSize + 1))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got, err := c.delta.Decode(nil, payload, ref, n)
		runtime.ReadMemStats(&after)
		if err == nil && len(got) != n {
			t.Fatalf("decoded %d bytes, want %d", len(got), n)
		}
		if used, budget := after.TotalAlloc-before.TotalAlloc, uint64(8*n+16<<20); used > budget {
			t.Fatalf("allocated %d bytes for %d raw bytes, budget %d", used, n, budget)
		}
	})
}

// usedBuffer is an empty buffer with room for n bytes, which hold what a
// decode before left there: DecodeTo must write every byte it returns.
func usedBuffer(n int) []byte {
	return bytes.Repeat([]byte{0xA5}, n+7)[:0]
}
