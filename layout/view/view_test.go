package layout

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
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
		size, _ := DType(dt).Size()
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

// parseIndependently reads a safetensors file with encoding/json only and
// returns tensor name -> bytes, plus the names in offset order.
func parseIndependently(t *testing.T, f []byte) (map[string][]byte, []string) {
	t.Helper()
	n := binary.LittleEndian.Uint64(f)
	if (8+n)%8 != 0 {
		t.Fatalf("data start %d not aligned", 8+n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(f[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	var md map[string]string
	json.Unmarshal(hdr["__metadata__"], &md)
	if md["format"] != "pt" {
		t.Fatalf("metadata %v lacks format pt", md)
	}
	data := f[8+n:]
	type ent struct {
		name       string
		begin, end int
	}
	var ents []ent
	out := map[string][]byte{}
	for k, v := range hdr {
		if k == "__metadata__" {
			continue
		}
		var e struct {
			DataOffsets [2]int `json:"data_offsets"`
		}
		json.Unmarshal(v, &e)
		ents = append(ents, ent{k, e.DataOffsets[0], e.DataOffsets[1]})
		out[k] = data[e.DataOffsets[0]:e.DataOffsets[1]]
	}
	sort.Slice(ents, func(i, j int) bool {
		return ents[i].begin < ents[j].begin || ents[i].begin == ents[j].begin && ents[i].end < ents[j].end
	})
	pos := 0
	var names []string
	for _, e := range ents {
		if e.begin != pos {
			t.Fatalf("offsets do not tile: %s starts at %d, expected %d", e.name, e.begin, pos)
		}
		pos = e.end
		names = append(names, e.name)
	}
	if pos != len(data) {
		t.Fatalf("tensors end at %d, buffer is %d", pos, len(data))
	}
	return out, names
}

// viewOf plans a view as a folder's views do, with a budget of its own,
// and lays it out as spec says; it returns the warnings the plan gave.
func viewOf(spec ViewSpec, plan func(*Budget, *Warnings) (*Plan, error)) (*View, []string, error) {
	var w Warnings
	p, err := plan(NewBudget(), &w)
	if err != nil {
		return nil, w.List(), err
	}
	v, err := p.View(spec)
	return v, w.List(), err
}

// sourcesView is viewOf a plan of sources.
func sourcesView(sources []Source, spec ViewSpec) (*View, []string, error) {
	return viewOf(spec, func(b *Budget, w *Warnings) (*Plan, error) { return PlanSources(sources, b, w) })
}

func readView(f ViewFile, files [][]byte, off, n int64) []byte {
	var out []byte
	for _, p := range f.Pieces(off, n) {
		if p.Inline != nil {
			out = append(out, p.Inline...)
		} else {
			out = append(out, files[p.Source][p.SrcOff:p.SrcOff+p.Len]...)
		}
	}
	return out
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
			h, err := ParseFile(f, int64(len(f)))
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
		specs := []ViewSpec{{}, {Shards: true, MaxShardSize: 1 + int64(r.Intn(2000))}, {Shards: true, MaxShardSize: DefaultMaxShardSize}}
		for _, spec := range specs {
			v, warnings, err := sourcesView(sources, spec)
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
				full := readView(f, files, 0, f.Size)
				if int64(len(full)) != f.Size {
					t.Fatalf("%s: read %d of %d bytes", f.Name, len(full), f.Size)
				}
				if f.Name == "model.safetensors.index.json" {
					idx, err := ParseIndex(full)
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
				tensors, names := parseIndependently(t, full)
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
					if !bytes.Equal(readView(f, files, off, n), ref[off:end]) {
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

func TestPlanShardsGreedy(t *testing.T) {
	var ts []placedTensor
	for i, l := range []int64{40, 30, 50, 200, 10, 10} {
		ts = append(ts, placedTensor{Tensor: Tensor{Name: fmt.Sprint(i), End: l}})
	}
	var sizes []string
	for _, g := range planShards(ts, 100) {
		var s int64
		for _, t := range g {
			s += t.Len()
		}
		sizes = append(sizes, fmt.Sprint(len(g), ":", s))
	}
	if got := fmt.Sprint(sizes); got != "[2:70 1:50 1:200 2:20]" {
		t.Fatalf("plan %s", got)
	}
}

func TestJSONStringSizeBoundsMarshal(t *testing.T) {
	for _, s := range []string{"", "model.layers.0.weight", "a\"b\\c", "<&>", "\x00\x1f", "é漢字", "\u2028", string([]byte{0xff, 0xfe}), strings.Repeat("x", 1000)} {
		js, _ := json.Marshal(s)
		if got := jsonStringSize(s); got < len(js) {
			t.Errorf("%q: bound %d, marshalled %d", s, got, len(js))
		}
	}
}
