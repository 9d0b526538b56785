package view_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/safetensors"
	. "github.com/ckptfs/ckptfs/layout/view"
	"github.com/ckptfs/ckptfs/layout/viewtest"
)

// The distributed safetensors saves in testdata were written by torch's
// HuggingFaceStorageWriter(save_distributed=True) (../dcp/testdata/gen.py
// --format hf): one file of pieces a rank, or two (fqn_to_index_mapping).
var shardedFixtures = []string{"hf-2ranks", "hf-4ranks-2files"}

// shardedFolder is a folder of weight files as a view reads them.
type shardedFolder struct {
	sources []Source
	data    [][]byte // by source
	want    map[string][]byte
}

func readShardedFixture(t *testing.T, dir string) *shardedFolder {
	t.Helper()
	f := &shardedFolder{}
	f.want = layouttest.ReadFixture(t, filepath.Join("testdata", dir), "shard-*.safetensors", func(name string, b []byte) { f.add(t, name, b) })
	return f
}

// add parses a weight file as the folder's next source.
func (f *shardedFolder) add(t *testing.T, name string, b []byte) {
	t.Helper()
	h, err := safetensors.ParseFile(b, int64(len(b)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	f.sources = append(f.sources, Source{Name: name, Header: h})
	f.data = append(f.data, b)
}

// served plans the folder's views and returns the tensors @single and
// @shards=100 serve (the same, or the test fails) and the warnings.
func (f *shardedFolder) served(t *testing.T) (map[string][]byte, []string) {
	t.Helper()
	var got map[string][]byte
	var warnings []string
	for _, spec := range []Spec{{}, {Shards: true, MaxShardSize: 100}} {
		v, w, err := viewtest.LaySources(f.sources, spec)
		if err != nil {
			t.Fatalf("%v (warnings %q)", err, w)
		}
		tensors := viewtest.Tensors(t, v, f.data)
		if got != nil && !maps.EqualFunc(got, tensors, bytes.Equal) {
			t.Fatal("@single and @shards serve different tensors")
		}
		got, warnings = tensors, w
	}
	return got, warnings
}

func TestShardedSafetensorsAssembleWhatTorchSaved(t *testing.T) {
	for _, dir := range shardedFixtures {
		t.Run(dir, func(t *testing.T) {
			f := readShardedFixture(t, dir)
			for _, s := range f.sources {
				if s.Header.Metadata[safetensors.ShardingVersionKey] != "1.0" || s.Header.Metadata[safetensors.ShardingInfoKey] == "" {
					t.Fatalf("%s: metadata %v", s.Name, s.Header.Metadata)
				}
			}
			got, warnings := f.served(t)
			if len(warnings) > 0 {
				t.Fatal(warnings)
			}
			if !maps.EqualFunc(got, f.want, bytes.Equal) {
				t.Fatalf("served %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(f.want)))
			}
			// The headers carry the sources' format, not their sharding keys.
			v, _, _ := viewtest.LaySources(f.sources, Spec{})
			head := viewtest.Read(v.Files[0], f.data, 0, v.Files[0].Size)
			var hdr struct {
				Metadata map[string]string `json:"__metadata__"`
			}
			json.Unmarshal(head[8:8+binary.LittleEndian.Uint64(head)], &hdr)
			if len(hdr.Metadata) != 1 || hdr.Metadata["format"] != "pt" {
				t.Fatalf("view metadata %v", hdr.Metadata)
			}
		})
	}
}

// f32 is n float32 elements counting from first, as bytes.
func f32(first, n int) []byte {
	var b []byte
	for i := range n {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(first+i)))
	}
	return b
}

// A tensor name two weight files define is never served as one file's
// bytes: it is assembled when the files say where each piece sits and the
// pieces tile the whole, else left out with a warning naming it and both
// files; every other tensor is served.
func TestTensorDefinedTwiceIsNeverOneFilesBytes(t *testing.T) {
	tensor := func(name string, shape []int64, first int) layouttest.Tensor {
		n := 1
		for _, d := range shape {
			n *= int(d)
		}
		return layouttest.Tensor{Name: name, DType: "F32", Shape: shape, Data: f32(first, n)}
	}
	whole := tensor("w", []int64{4, 2}, 0)
	top, bottom := tensor("w", []int64{2, 2}, 0), tensor("w", []int64{2, 2}, 4)
	// A file of a piece of w at wAt and a tensor of its own, own, that it
	// places whole; with wAt nil, its sharding info does not name w.
	piece := func(wAt []int64, w layouttest.Tensor, own string) []byte {
		at := map[string][]int64{own: {0}}
		if wAt != nil {
			at["w"] = wAt
		}
		return layouttest.Piece(at, w, tensor(own, []int64{3}, 100))
	}
	for _, c := range []struct {
		name  string
		files [][]byte
		want  string // "" when w is served whole
	}{
		{"plain twins", [][]byte{
			layouttest.Safetensors(nil, whole, tensor("own.a", []int64{3}, 100)),
			layouttest.Safetensors(nil, tensor("w", []int64{4, 2}, 9), tensor("own.b", []int64{3}, 100))}, "does not say where its piece sits"},
		{"pieces", [][]byte{piece([]int64{0, 0}, top, "own.a"), piece([]int64{2, 0}, bottom, "own.b")}, ""},
		{"replicated pieces, read once", [][]byte{piece([]int64{0, 0}, whole, "own.a"), piece([]int64{0, 0}, whole, "own.b")}, ""},
		{"a piece and a plain twin", [][]byte{
			piece([]int64{0, 0}, top, "own.a"),
			layouttest.Safetensors(nil, bottom, tensor("own.b", []int64{3}, 100))}, "does not say where its piece sits"},
		{"sharding info in one file, none for it in the other", [][]byte{
			piece([]int64{0, 0}, top, "own.a"), piece(nil, bottom, "own.b")}, "but not where this one does"},
		{"overlapping pieces", [][]byte{piece([]int64{0, 0}, top, "own.a"), piece([]int64{1, 0}, tensor("w", []int64{3, 2}, 2), "own.b")}, "overlap"},
		{"a piece missing", [][]byte{piece([]int64{0, 0}, top, "own.a"), piece([]int64{3, 0}, tensor("w", []int64{1, 2}, 6), "own.b")}, "saved by no chunk"},
		{"offsets out of range", [][]byte{piece([]int64{0, 0}, top, "own.a"), piece([]int64{1 << 62, 0}, bottom, "own.b")}, "out of range"},
		{"offsets of another rank", [][]byte{piece([]int64{0, 0}, top, "own.a"), piece([]int64{2}, bottom, "own.b")}, "places a piece of rank 2"},
		{"pieces of another dtype", [][]byte{
			piece([]int64{0, 0}, top, "own.a"),
			piece([]int64{2, 0}, layouttest.Tensor{Name: "w", DType: "I32", Shape: []int64{2, 2}, Data: f32(4, 4)}, "own.b")}, "as I32"},
		{"one piece, placed past the start", [][]byte{
			layouttest.Safetensors(nil, tensor("own.a", []int64{3}, 100)), piece([]int64{2, 0}, bottom, "own.b")}, "saved by no chunk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &shardedFolder{}
			for i, b := range c.files {
				f.add(t, fmt.Sprintf("f%d.safetensors", i), b)
			}
			got, warnings := f.served(t)
			if got["own.a"] == nil || got["own.b"] == nil {
				t.Fatalf("the other tensors are not served: %v", slices.Sorted(maps.Keys(got)))
			}
			if c.want == "" {
				if !bytes.Equal(got["w"], whole.Data) || len(warnings) > 0 {
					t.Fatalf("w served as %v, warnings %q", got["w"], warnings)
				}
				return
			}
			if got["w"] != nil {
				t.Fatalf("w served as %v", got["w"])
			}
			if len(warnings) != 1 || !strings.Contains(warnings[0], `"w"`) || !strings.Contains(warnings[0], c.want) {
				t.Fatalf("warnings %q, want one naming w and %q", warnings, c.want)
			}
			if !strings.Contains(warnings[0], "f1.safetensors") {
				t.Fatalf("warning %q does not name the file", warnings[0])
			}
		})
	}
}

// A file whose sharding info cannot be read leaves out every tensor it
// holds a piece of, wherever else it is defined; the rest is served.
func TestBadShardingInfoLeavesItsTensorsOut(t *testing.T) {
	top := layouttest.Tensor{Name: "w", DType: "F32", Shape: []int64{1, 2}, Data: f32(0, 2)}
	bottom := layouttest.Tensor{Name: "w", DType: "F32", Shape: []int64{1, 2}, Data: f32(2, 2)}
	good := layouttest.Piece(map[string][]int64{"w": {0, 0}, "x": {0}}, top, layouttest.Tensor{Name: "x", DType: "U8", Shape: []int64{1}, Data: []byte{7}})
	md := func(info string) map[string]string {
		return map[string]string{"format": "pt", safetensors.ShardingVersionKey: "1.0", safetensors.ShardingInfoKey: info}
	}
	for _, c := range []struct {
		name     string
		metadata map[string]string
		want     string
	}{
		{"5 MB of it", md(layouttest.WideShardingInfo(125_000)), "exceeds the limit"},
		{"nested deep", md(layouttest.DeepShardingInfo(20_000)), safetensors.ShardingInfoKey},
		{"a name twice", md(layouttest.DuplicateShardingInfo()), "duplicate key"},
		{"not JSON", md(`{"w":`), safetensors.ShardingInfoKey},
		{"negative offsets", md(`{"w":{"saved_offsets":[-1,0]}}`), "out of range"},
		{"another field", md(`{"w":{"saved_offsets":[1,0],"shape":[2,2]}}`), "unknown field"},
		{"an unknown version", map[string]string{safetensors.ShardingVersionKey: "2.0", safetensors.ShardingInfoKey: `{"w":{"saved_offsets":[1,0]}}`}, `"2.0" is not one views read`},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &shardedFolder{}
			f.add(t, "good.safetensors", good)
			f.add(t, "bad.safetensors", layouttest.Safetensors(c.metadata, bottom))
			got, warnings := f.served(t)
			if got["w"] != nil || got["x"] == nil {
				t.Fatalf("served %v", slices.Sorted(maps.Keys(got)))
			}
			if len(warnings) != 2 || !strings.Contains(warnings[0], "bad.safetensors") || !strings.Contains(warnings[0], c.want) ||
				!strings.Contains(warnings[1], `"w"`) {
				t.Fatalf("warnings %q, want the file's cause (%q), then w", warnings, c.want)
			}
		})
	}
}

// A view's __metadata__ is what every source says, with one value: a key
// one rank's file alone carries, or that two files give different values,
// is not presented as the model's; the sharding keys never are.
func TestViewMetadataIsWhatEverySourceSays(t *testing.T) {
	top := layouttest.Tensor{Name: "w", DType: "F32", Shape: []int64{1, 2}, Data: f32(0, 2)}
	bottom := layouttest.Tensor{Name: "w", DType: "F32", Shape: []int64{1, 2}, Data: f32(2, 2)}
	md := func(at []int64, extra map[string]string) map[string]string {
		m := map[string]string{"format": "pt", safetensors.ShardingVersionKey: "1.0",
			safetensors.ShardingInfoKey: layouttest.ShardingInfo(map[string][]int64{"w": at})}
		maps.Copy(m, extra)
		return m
	}
	f := &shardedFolder{}
	f.add(t, "shard-00001.safetensors", layouttest.Safetensors(md([]int64{0, 0}, map[string]string{"rank": "0", "run": "a", "rank0_only": "x"}), top))
	f.add(t, "shard-00002.safetensors", layouttest.Safetensors(md([]int64{1, 0}, map[string]string{"rank": "1", "run": "a"}), bottom))
	if got, warnings := f.served(t); len(warnings) > 0 || !bytes.Equal(got["w"], f32(0, 4)) {
		t.Fatalf("served %v, warnings %q", got, warnings)
	}
	v, _, err := viewtest.LaySources(f.sources, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	head := viewtest.Read(v.Files[0], f.data, 0, v.Files[0].Size)
	var hdr struct {
		Metadata map[string]string `json:"__metadata__"`
	}
	if err := json.Unmarshal(head[8:8+binary.LittleEndian.Uint64(head)], &hdr); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"format": "pt", "run": "a"}; !maps.Equal(hdr.Metadata, want) {
		t.Fatalf("view metadata %v, want %v", hdr.Metadata, want)
	}
}

// Sharding info without a DCP_VERSION is read as version 1.0's
// (safetensors.ShardingVersions).
func TestShardingInfoWithoutAVersion(t *testing.T) {
	f := &shardedFolder{}
	for r := range 2 {
		info := layouttest.ShardingInfo(map[string][]int64{"w": {int64(r), 0}})
		piece := layouttest.Tensor{Name: "w", DType: "F32", Shape: []int64{1, 2}, Data: f32(2*r, 2)}
		f.add(t, fmt.Sprintf("shard-0000%d.safetensors", r+1), layouttest.Safetensors(map[string]string{safetensors.ShardingInfoKey: info}, piece))
	}
	if got, warnings := f.served(t); len(warnings) > 0 || len(got) != 1 || !bytes.Equal(got["w"], f32(0, 4)) {
		t.Fatalf("served %v, warnings %q", got, warnings)
	}
}

// A rank's sharding info past the 64 KiB that bounds the rest of its
// __metadata__ is read (up to safetensors.MaxShardingInfo): a large
// model's ranks are not left out.
func TestLargeShardingInfoIsServed(t *testing.T) {
	const n = 1500
	at := [2]map[string][]int64{{}, {}}
	var pieces [2][]layouttest.Tensor
	want := map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("model.layers.%04d.self_attn.weight", i)
		for r := range 2 {
			at[r][name] = []int64{int64(r)}
			pieces[r] = append(pieces[r], layouttest.Tensor{Name: name, DType: "F32", Shape: []int64{1}, Data: f32(2*i+r, 1)})
		}
		want[name] = f32(2*i, 2)
	}
	f := &shardedFolder{}
	for r := range 2 {
		info := layouttest.ShardingInfo(at[r])
		if len(info) <= 64<<10 {
			t.Fatalf("control: sharding info of %d bytes", len(info))
		}
		f.add(t, fmt.Sprintf("shard-0000%d.safetensors", r+1), layouttest.Piece(at[r], pieces[r]...))
	}
	got, warnings := f.served(t)
	if len(warnings) > 0 || !maps.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("served %d tensors of %d, warnings %q", len(got), len(want), warnings)
	}
}

// A distributed save with a file that could not be read is not served at
// all: the pieces that file held are unknown, and what the others hold
// may look whole without them. A file removed (the first rank's here)
// leaves its tensors out, never served in part.
func TestDistributedSaveMissingAFile(t *testing.T) {
	f := readShardedFixture(t, "hf-2ranks")
	f.sources[1] = Source{Name: f.sources[1].Name, Err: errors.New("safetensors: tensors cover 400 data bytes, file has 100")}
	if _, _, err := viewtest.LaySources(f.sources, Spec{}); err == nil || !strings.Contains(err.Error(), "shard-00002-model-00001-of-00001.safetensors: safetensors: tensors cover") {
		t.Fatalf("a distributed save missing a rank's file planned: %v", err)
	}
	f = readShardedFixture(t, "hf-2ranks")
	f.sources, f.data = f.sources[1:], f.data[1:]
	got, warnings := f.served(t)
	if len(got) == 0 || len(warnings) == 0 {
		t.Fatalf("served %d tensors, warnings %q", len(got), warnings)
	}
	for name, b := range got {
		if !bytes.Equal(b, f.want[name]) {
			t.Fatalf("%s served in part", name)
		}
	}
}

// One budget for the folder, however many names lead to one header: 20
// hard links to a file of 10,000 tensors define each name 20 times, so
// every one is left out, with 20 warnings and a line counting the rest;
// 110 links are over the budget and refused before any is planned.
func TestPlanBudgetIsTheFolders(t *testing.T) {
	data := layouttest.TinyTensorsHeader(10_000, 10)
	h, err := safetensors.ParseFile(data, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	links := func(n int) []Source {
		var out []Source
		for i := range n {
			out = append(out, Source{Name: fmt.Sprintf("link%02d.safetensors", i), Header: h})
		}
		return out
	}
	var warnings []string
	used := layouttest.Allocated(func() { _, warnings, err = viewtest.LaySources(links(20), Spec{}) })
	if err == nil || !strings.Contains(err.Error(), "no tensor") {
		t.Fatalf("20 links: %v", err)
	}
	if len(warnings) != MaxWarnings+1 || !strings.Contains(warnings[MaxWarnings], "and 9980 more") ||
		!strings.Contains(warnings[0], "link00.safetensors, link01.safetensors and 18 more files") {
		t.Fatalf("%d warnings: %q", len(warnings), warnings)
	}
	if used > 64<<20 {
		t.Fatalf("planning 20 links allocated %d bytes", used)
	}
	var over *BudgetError
	if used := layouttest.Allocated(func() { _, _, err = viewtest.LaySources(links(110), Spec{}) }); !errors.As(err, &over) || over.What != "tensors" || used > 1<<20 {
		t.Fatalf("110 links: %v, %d bytes allocated", err, used)
	}
}
