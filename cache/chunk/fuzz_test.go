package chunk

import (
	"bytes"
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
		if len(v) > HeaderLen {
			v[len(v)-1] ^= 1
			if _, err := c.Decode(h, v); err == nil {
				t.Fatal("corrupted payload accepted")
			}
		}
	})
}
