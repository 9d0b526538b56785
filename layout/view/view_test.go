package view_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/safetensors"
	. "github.com/ckptfs/ckptfs/layout/view"
	"github.com/ckptfs/ckptfs/layout/viewtest"
)

type refTensor struct {
	name  string
	dtype string
	shape []int64
	data  []byte
}

// randomSource writes a safetensors file with encoding/json, independently
// of EmitHeader, with tensors laid out in a shuffled order.
func randomSource(r *rand.Rand, prefix string, n int) ([]byte, []refTensor) {
	dtypes := []string{"F32", "BF16", "F16", "I64", "U8", "BOOL", "F8_E4M3"}
	var ts []refTensor
	for i := 0; i < n; i++ {
		dt := dtypes[r.Intn(len(dtypes))]
		size, _ := safetensors.DType(dt).Size()
		var shape []int64
		elems := int64(1)
		for d := r.Intn(3); d > 0; d-- {
			dim := int64(r.Intn(40))
			if r.Intn(10) == 0 {
				dim = 0
			}
			shape = append(shape, dim)
			elems *= dim
		}
		if shape == nil {
			shape = []int64{}
		}
		data := make([]byte, elems*size)
		r.Read(data)
		ts = append(ts, refTensor{fmt.Sprintf("%s.t%d", prefix, i), dt, shape, data})
	}
	order := r.Perm(len(ts))
	header := map[string]any{"__metadata__": map[string]string{"src": prefix}}
	var buf []byte
	for _, i := range order {
		t := ts[i]
		header[t.name] = map[string]any{"dtype": t.dtype, "shape": t.shape, "data_offsets": []int{len(buf), len(buf) + len(t.data)}}
		buf = append(buf, t.data...)
	}
	js, _ := json.Marshal(header)
	f := make([]byte, 8)
	binary.LittleEndian.PutUint64(f, uint64(len(js)))
	return append(append(f, js...), buf...), ts
}

func TestViewsProperty(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for iter := 0; iter < 200; iter++ {
		var files [][]byte
		var sources []Source
		want := map[string][]byte{}
		tensors := 0
		for s := 0; s < 1+r.Intn(4); s++ {
			f, ts := randomSource(r, fmt.Sprintf("s%d", s), r.Intn(12))
			h, err := safetensors.ParseFile(f, int64(len(f)))
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
			sources = append(sources, Source{Name: fmt.Sprintf("s%d.safetensors", s), Header: h})
			for _, x := range ts {
				want[x.name] = x.data
			}
			tensors += len(ts)
		}
		specs := []Spec{{}, {Shards: true, MaxShardSize: 1 + int64(r.Intn(2000))}, {Shards: true, MaxShardSize: DefaultMaxShardSize}}
		for _, spec := range specs {
			v, warnings, err := viewtest.LaySources(sources, spec)
			if tensors == 0 && err != nil && strings.Contains(err.Error(), "no tensor") {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) != 0 {
				t.Fatal(warnings)
			}
			got := map[string][]byte{}
			foundIn := map[string]string{} // tensor -> view file it was read from
			for _, f := range v.Files {
				// Reference: the view's own header, then tensor bytes by name.
				full := viewtest.Read(f, files, 0, f.Size)
				if int64(len(full)) != f.Size {
					t.Fatalf("%s: read %d of %d bytes", f.Name, len(full), f.Size)
				}
				if f.Name == "model.safetensors.index.json" {
					idx, err := safetensors.ParseIndex(full)
					if err != nil {
						t.Fatal(err)
					}
					var total int64
					for name, shard := range idx.WeightMap {
						total += int64(len(want[name]))
						if foundIn[name] != shard {
							t.Fatalf("index maps %s to %s, it is in %q", name, shard, foundIn[name])
						}
					}
					if total != idx.TotalSize || len(idx.WeightMap) != len(want) {
						t.Fatalf("index total %d want %d", idx.TotalSize, total)
					}
					continue
				}
				tensors, names := layouttest.ParseSafetensors(t, full)
				hdrLen := 8 + int(binary.LittleEndian.Uint64(full))
				ref := append([]byte{}, full[:hdrLen]...)
				var shardBytes int64
				for _, name := range names {
					ref = append(ref, want[name]...)
					got[name] = tensors[name]
					foundIn[name] = f.Name
					shardBytes += int64(len(want[name]))
				}
				if spec.Shards && shardBytes > spec.MaxShardSize && len(names) > 1 {
					t.Fatalf("%s holds %d bytes in %d tensors, max %d", f.Name, shardBytes, len(names), spec.MaxShardSize)
				}
				if !bytes.Equal(ref, full) {
					t.Fatalf("%s differs from reference", f.Name)
				}
				for k := 0; k < 20; k++ {
					off := r.Int63n(f.Size + 1)
					n := r.Int63n(f.Size + 10)
					end := min(off+n, f.Size)
					if !bytes.Equal(viewtest.Read(f, files, off, n), ref[off:end]) {
						t.Fatalf("%s: read at %d+%d differs", f.Name, off, n)
					}
				}
			}
			if len(got) != len(want) {
				t.Fatalf("view has %d tensors, want %d", len(got), len(want))
			}
			for name, data := range want {
				if !bytes.Equal(got[name], data) {
					t.Fatalf("tensor %s differs", name)
				}
			}
		}
	}
}

func TestParseViewName(t *testing.T) {
	cases := []struct {
		in   string
		dir  string
		spec Spec
		ok   bool
		err  bool
	}{
		{"m@single", "m", Spec{}, true, false},
		{"m@shards", "m", Spec{Shards: true, MaxShardSize: 5_000_000_000}, true, false},
		{"m@shards=500MB", "m", Spec{Shards: true, MaxShardSize: 500_000_000}, true, false},
		{"m@shards=2GiB", "m", Spec{Shards: true, MaxShardSize: 2 << 30}, true, false},
		{"m@shards=x", "", Spec{}, true, true},
		{"m@other", "", Spec{}, false, false},
		{"@single", "", Spec{}, false, false},
		{"plain", "", Spec{}, false, false},
	}
	for _, c := range cases {
		dir, spec, ok, err := ParseName(c.in)
		if dir != c.dir || spec != c.spec || ok != c.ok || (err != nil) != c.err {
			t.Errorf("%s: got %q %+v %v %v", c.in, dir, spec, ok, err)
		}
	}
}
