package layout

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
)

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

// torchSeeds adds the committed torch.save fixtures to a fuzz corpus.
func torchSeeds(f *testing.F, each func([]byte)) {
	names, _ := filepath.Glob("testdata/torch/*.bin")
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		each(data)
	}
}

// hostilePickles are deep, wide and amplifying seeds, small enough that
// their mutations run fast.
func hostilePickles() [][]byte {
	return [][]byte{
		layouttest.DeepKeyPickle(20_000),
		layouttest.WideDictPickle(5_000),
		layouttest.DupPickle(100_000),
		layouttest.OrderedDictAgainPickle(100, 1_000),
		layouttest.SelfListPickle(),
		layouttest.PlannerDataAgainPickle(100, 1_000),
		layouttest.TransformsAgainPickle(100, 1_000),
		layouttest.PosixPathAgainPickle(64, 63, 1_000),
		layouttest.PosixPathAgainPickle(10_000, 1_000, 1),
	}
}

// withinBudget fails t if fn allocates more than a pickle of n bytes may.
func withinBudget(t *testing.T, n int, fn func()) {
	if used, budget := allocated(fn), pickleMemoryBudget(n); used > budget {
		t.Fatalf("allocated %d bytes for a %d-byte input, budget %d", used, n, budget)
	}
}

func FuzzParseTorch(f *testing.F) {
	torchSeeds(f, func(b []byte) { f.Add(b) })
	for _, p := range hostilePickles() {
		f.Add(layouttest.TorchZip(p, nil))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h *Header
		var err error
		withinBudget(t, len(data), func() { h, _, err = ParseTorch(bytes.NewReader(data), int64(len(data)), NewBudget()) })
		if err != nil {
			return
		}
		// Every tensor must lie in the file and be exactly its shape's size.
		for _, x := range h.Tensors {
			size, ok := x.DType.Size()
			if !ok || x.Begin < 0 || x.End > int64(len(data)) {
				t.Fatalf("tensor %+v outside a %d-byte file", x, len(data))
			}
			for _, d := range x.Shape {
				size *= d
			}
			if size != x.Len() {
				t.Fatalf("tensor %+v spans %d bytes, shape says %d", x, x.Len(), size)
			}
		}
	})
}

func FuzzParsePickle(f *testing.F) {
	torchSeeds(f, func(b []byte) {
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return // the legacy format has no zip
		}
		for _, zf := range zr.File {
			if isTorchPickle(zf.Name) {
				rc, _ := zf.Open()
				data, _ := io.ReadAll(rc)
				f.Add(data)
			}
		}
	})
	for _, p := range hostilePickles() {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p *Pickled
		var err error
		withinBudget(t, len(data), func() { p, err = ParsePickle(data) })
		if err != nil {
			return
		}
		for _, s := range p.Storages {
			if s.Bytes < 0 {
				t.Fatalf("storage %+v", s)
			}
		}
	})
}

// FuzzParseDCPMetadata reads a .metadata and, when it parses, plans its
// views over the 2-rank fixture's .distcp files: every piece a view reads
// must lie inside the file it reads from, and the files tile their size.
func FuzzParseDCPMetadata(f *testing.F) {
	for _, dir := range dcpFixtures {
		if md, err := os.ReadFile(filepath.Join("testdata/dcp", dir, DCPMetadataName)); err == nil {
			f.Add(md)
		}
	}
	for _, p := range hostilePickles() {
		f.Add(p)
	}
	var files []DCPFile
	var data [][]byte
	for _, name := range []string{"__0_0.distcp", "__1_0.distcp"} {
		b, err := os.ReadFile(filepath.Join("testdata/dcp/2ranks", name))
		if err != nil {
			f.Fatal(err)
		}
		files, data = append(files, DCPFile{Name: name, R: bytes.NewReader(b), Size: int64(len(b))}), append(data, b)
	}
	f.Fuzz(func(t *testing.T, md []byte) {
		var ck *DCPCheckpoint
		var v *View
		var err error
		plan := func() {
			if ck, err = ParseDCPMetadata(md); err == nil {
				v, _, err = dcpView(ck, DCPModelNames(ck, "", false), files, ViewSpec{Shards: true, MaxShardSize: 200})
			}
		}
		if used, budget := allocated(plan), dcpMemoryBudget(len(md)); used > budget {
			t.Fatalf("allocated %d bytes for a %d-byte input, budget %d", used, len(md), budget)
		}
		if err != nil {
			return
		}
		checkPieces(t, v, data)
	})
}

// checkPieces fails t unless the pieces of every file of v tile it and
// lie inside their sources.
func checkPieces(t *testing.T, v *View, sources [][]byte) {
	for _, vf := range v.Files {
		var n int64
		for _, p := range vf.Pieces(0, vf.Size) {
			if p.Off != n {
				t.Fatalf("%s: piece at %d, want %d", vf.Name, p.Off, n)
			}
			if p.Inline == nil && (p.SrcOff < 0 || p.SrcOff+p.Len > int64(len(sources[p.Source]))) {
				t.Fatalf("%s: piece %+v outside its %d-byte source", vf.Name, p, len(sources[p.Source]))
			}
			n += p.Len
		}
		if n != vf.Size {
			t.Fatalf("%s: pieces cover %d of %d bytes", vf.Name, n, vf.Size)
		}
	}
}

// FuzzShardedSafetensors plans the views of a distributed safetensors save
// whose second rank's file is the input, beside the first rank's file
// torch wrote: within a memory budget, every piece a view reads lies
// inside the file it reads from, and the files tile their size.
func FuzzShardedSafetensors(f *testing.F) {
	dir := "testdata/dcp/hf-2ranks/"
	rank0, err := os.ReadFile(dir + "shard-00001-model-00001-of-00001.safetensors")
	if err != nil {
		f.Fatal(err)
	}
	rank1, err := os.ReadFile(dir + "shard-00002-model-00001-of-00001.safetensors")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rank1)
	bottom := layouttest.Tensor{Name: "embed.weight", DType: "F32", Shape: []int64{5, 6}, Data: make([]byte, 120)}
	for _, at := range [][]int64{{5, 0}, {4, 0}, {1 << 62, 0}, {5}, {5, 0, 0}, {0, 6}} { // overlap, out of range, disagreeing with the shape
		f.Add(layouttest.Piece(map[string][]int64{"embed.weight": at}, bottom))
	}
	for _, info := range []string{layouttest.DeepShardingInfo(5_000), layouttest.WideShardingInfo(2_000), layouttest.DuplicateShardingInfo()} {
		f.Add(layouttest.Safetensors(map[string]string{ShardingVersionKey: "1.0", ShardingInfoKey: info}, bottom))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v *View
		var err error
		plan := func() {
			var h *Header
			if h, err = ParseFile(data, int64(len(data))); err != nil {
				return
			}
			h0, _ := ParseFile(rank0, int64(len(rank0)))
			sources := []Source{{Name: "rank0", Header: h0}, {Name: "rank1", Header: h}}
			v, _, err = sourcesView(sources, ViewSpec{Shards: true, MaxShardSize: 200})
		}
		if used, budget := allocated(plan), 64*uint64(len(data))+64<<20; used > budget {
			t.Fatalf("allocated %d bytes for a %d-byte input, budget %d", used, len(data), budget)
		}
		if err != nil {
			return
		}
		checkPieces(t, v, [][]byte{rank0, data})
	})
}
