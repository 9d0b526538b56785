package safetensors

import (
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// withinBudget fails t if fn allocates more than a parser may for an
// input of n bytes: 64 bytes each, and the 256 MiB a pickle's work budget
// may take.
func withinBudget(t *testing.T, n int, fn func()) {
	layouttest.WithinBudget(t, n, 64*uint64(n)+256<<20, fn)
}

func FuzzParseFile(f *testing.F) {
	f.Add(rawFile(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(rawFile(`{"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}`, make([]byte, 2)))
	f.Add(rawFile(`{}`, nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{'})
	f.Add(layouttest.TinyTensorsHeader(2000, 4000))                                        // wide
	f.Add(rawFile(`{"a":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`}`, nil)) // deep
	f.Fuzz(func(t *testing.T, data []byte) {
		var h *Header
		var err error
		withinBudget(t, len(data), func() { h, err = ParseFile(data, int64(len(data))) })
		if err != nil {
			return
		}
		// A valid header re-emitted must parse to the same tensor table.
		head, _ := EmitHeader(h.Tensors, h.Metadata)
		out := append(head, data[h.DataStart:]...)
		h2, err := ParseFile(out, int64(len(out)))
		if err != nil {
			t.Fatalf("re-emitted header does not parse: %v", err)
		}
		if len(h2.Tensors) != len(h.Tensors) {
			t.Fatalf("tensor count %d != %d", len(h2.Tensors), len(h.Tensors))
		}
		for i := range h.Tensors {
			a, b := h.Tensors[i], h2.Tensors[i]
			if a.Name != b.Name || a.Begin != b.Begin || a.End != b.End || a.DType != b.DType {
				t.Fatalf("tensor %d: %+v != %+v", i, a, b)
			}
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"metadata":{"total_size":12},"weight_map":{"a":"x.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{"a":"../x"}}`))
	f.Add([]byte(`{"weight_map":` + strings.Repeat(`{"a":`, 20000) + `1` + strings.Repeat(`}`, 20001)))
	f.Fuzz(func(t *testing.T, data []byte) {
		var idx *Index
		var err error
		withinBudget(t, len(data), func() { idx, err = ParseIndex(data) })
		if err != nil {
			return
		}
		for _, s := range idx.Shards() {
			if !IsPlainName(s) {
				t.Fatalf("accepted shard name %q", s)
			}
		}
	})
}
