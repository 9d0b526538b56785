package dcp

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/pickle"
	"github.com/ckptfs/ckptfs/layout/torch"
	"github.com/ckptfs/ckptfs/layout/view"
	"github.com/ckptfs/ckptfs/layout/viewtest"
)

// The checkpoints in testdata were written by real torch (gen.py says
// how): 2 and 4 gloo ranks, both serialization formats, and one
// process under each torch release tried.
var fixtures = []string{"2ranks", "4ranks", "2ranks-safetensors", "torch-2.15", "torch-2.14", "torch-2.13", "torch-2.5"}

type folder struct {
	ck    *Checkpoint
	files []File
	data  [][]byte // by source
	want  map[string][]byte
}

func readFixture(t *testing.T, dir string) *folder {
	t.Helper()
	dir = filepath.Join("testdata", dir)
	md, err := os.ReadFile(filepath.Join(dir, MetadataName))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := ParseMetadata(md)
	if err != nil {
		t.Fatal(err)
	}
	f := &folder{ck: ck}
	f.want = layouttest.ReadFixture(t, dir, "*.distcp", func(name string, b []byte) {
		f.files = append(f.files, File{Name: name, R: bytes.NewReader(b), Size: int64(len(b))})
		f.data = append(f.data, b)
	})
	return f
}

func TestDCPViewsAssembleWhatTorchSaved(t *testing.T) {
	for _, dir := range fixtures {
		t.Run(dir, func(t *testing.T) {
			f := readFixture(t, dir)
			names := ModelNames(f.ck, "", false)
			for fqn, name := range names {
				if fqn != ModelPrefix+name {
					t.Fatalf("%s served as %s", fqn, name)
				}
			}
			for _, spec := range []view.Spec{{}, {Shards: true, MaxShardSize: 100}} {
				v, warnings, err := planView(f.ck, names, f.files, spec)
				if err != nil {
					t.Fatal(err)
				}
				if len(warnings) > 0 {
					t.Fatal(warnings)
				}
				got := viewtest.Tensors(t, v, f.data)
				if len(got) != len(f.want) {
					t.Fatalf("view has %d tensors, want %d: %v", len(got), len(f.want), slices.Sorted(maps.Keys(got)))
				}
				for name, b := range f.want {
					if !bytes.Equal(got[name], b) {
						t.Fatalf("%s differs", name)
					}
				}
			}
		})
	}
}

// planView is viewtest.Lay of a DCP plan.
func planView(ck *Checkpoint, names map[string]string, files []File, spec view.Spec) (*view.View, []string, error) {
	return viewtest.Lay(spec, func(b *view.Budget, w *view.Warnings) (*view.Plan, error) { return Plan(ck, names, files, b, w) })
}

func TestDCPModelNames(t *testing.T) {
	f := readFixture(t, "2ranks")
	if f.ck.Version != "1.0.0" || !slices.Contains(f.ck.Skipped, "step") {
		t.Fatalf("version %q, skipped %v", f.ck.Version, f.ck.Skipped)
	}
	for _, c := range []struct {
		prefix   string
		override bool
		want     string
	}{
		{"", false, "embed.weight layer.0.bias layer.0.weight layer.1.weight norm.weight scale"},
		{"", true, "model.embed.weight model.layer.0.bias model.layer.0.weight model.layer.1.weight model.norm.weight model.scale"},
		{"model.layer.", true, "0.bias 0.weight 1.weight"},
		{"optim.", true, ""},
	} {
		var got []string
		for _, name := range ModelNames(f.ck, c.prefix, c.override) {
			got = append(got, name)
		}
		slices.Sort(got)
		if strings.Join(got, " ") != c.want {
			t.Fatalf("prefix %q: %v, want %s", c.prefix, got, c.want)
		}
	}
	// Optimizer state nested deeper is left out too.
	deep := &Checkpoint{Tensors: []Tensor{{FQN: "app.model.w"}, {FQN: "app.optim.state.w.exp_avg"}},
		Paths: map[string][]string{"app.model.w": {"app", "model", "w"}, "app.optim.state.w.exp_avg": {"app", "optim", "state", "w", "exp_avg"}}}
	if n := ModelNames(deep, "", false); len(n) != 1 || n["app.model.w"] != "app.model.w" {
		t.Fatalf("deep: %v", n)
	}
	if n := ModelNames(deep, "app.model.", true); len(n) != 1 || n["app.model.w"] != "w" {
		t.Fatalf("deep, prefix app.model.: %v", n)
	}
	// A flat state dict (no planner_data nesting) is served as named.
	flat := &Checkpoint{Tensors: []Tensor{{FQN: "model.embed.weight"}, {FQN: "lm_head.weight"}}}
	if n := ModelNames(flat, "", false); n["model.embed.weight"] != "model.embed.weight" || len(n) != 2 {
		t.Fatalf("flat: %v", n)
	}
}

// A 7B-shaped model sharded 8 ways on dim 1 plans in kilobytes: one tile
// of 8 parts a tensor, not a run per row.
func TestDCPStridedPlanIsCompact(t *testing.T) {
	ck := &Checkpoint{}
	var files []File
	for r := 0; r < 8; r++ {
		files = append(files, File{Name: fmt.Sprintf("__%d_0.distcp", r), R: bytes.NewReader(nil), Size: 1 << 40})
	}
	const layers, hidden = 32, 4096
	var off [8]int64
	for i := 0; i < layers*4; i++ {
		tt := Tensor{FQN: fmt.Sprintf("model.w%d", i), DType: "bfloat16", Size: []int64{hidden, hidden * 3}}
		for r := int64(0); r < 8; r++ {
			st := Storage{Path: files[r].Name, Offset: off[r], Length: hidden * hidden * 3 / 8 * 2}
			off[r] += st.Length
			tt.Chunks = append(tt.Chunks, Chunk{Offsets: []int64{0, r * hidden * 3 / 8}, Sizes: []int64{hidden, hidden * 3 / 8}, Storage: st})
		}
		ck.Tensors = append(ck.Tensors, tt)
	}
	names := ModelNames(ck, "", true)
	v, _, err := planView(ck, names, files, view.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	for _, e := range v.Files[0].Extents {
		if e.Tile != nil {
			parts += len(e.Tile.Parts)
		}
	}
	if n := len(v.Files[0].Extents); n != layers*4+1 || parts != layers*4*8 {
		t.Fatalf("%d extents and %d parts, want a tile of 8 a tensor", n, parts)
	}
	// A read across a row boundary gets the right pieces.
	first := v.Files[0].Extents[1]
	ps := v.Files[0].Pieces(first.Off+hidden*3*2-10, 20)
	if len(ps) != 2 || ps[0].Source != 7 || ps[1].Source != 0 || ps[1].SrcOff != hidden*3/8*2 {
		t.Fatalf("pieces %+v", ps)
	}
}

// Malformed chunk sets leave the tensor out, naming the cause, and the
// other tensors are still served.
func TestDCPMalformedTensorsLeftOut(t *testing.T) {
	f := readFixture(t, "2ranks")
	for _, c := range []struct {
		name   string
		break_ func(*Tensor, []File)
		want   string
	}{
		{"overlap", func(t *Tensor, _ []File) { t.Chunks[1].Offsets = []int64{2} }, "overlap"},
		{"missing", func(t *Tensor, _ []File) { t.Chunks = t.Chunks[:1] }, "incomplete"},
		{"outside", func(t *Tensor, _ []File) { t.Chunks[1].Sizes = []int64{9} }, "outside"},
		{"no file", func(t *Tensor, _ []File) { t.Chunks[0].Storage.Path = "../etc/passwd" }, "does not have"},
		{"transform", func(t *Tensor, _ []File) { t.Chunks[0].Storage.Transforms = []string{"zstd"} }, "transforms"},
		{"truncated", func(t *Tensor, fs []File) {
			for i := range fs {
				fs[i].Size = t.Chunks[0].Storage.Offset + 100
			}
		}, "past the end"},
		{"wrong length", func(t *Tensor, _ []File) { t.Chunks[0].Storage.Length = 3 }, "zip"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ck := *f.ck
			ck.Tensors = slices.Clone(ck.Tensors)
			files := slices.Clone(f.files)
			i := slices.IndexFunc(ck.Tensors, func(x Tensor) bool { return x.FQN == "model.layer.0.bias" })
			bad := ck.Tensors[i]
			bad.Chunks = slices.Clone(bad.Chunks)
			c.break_(&bad, files)
			ck.Tensors[i] = bad
			v, warnings, err := planView(&ck, ModelNames(&ck, "", false), files, view.Spec{})
			if c.name == "truncated" {
				if err == nil && len(warnings) == 0 {
					t.Fatal("truncated files served")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) != 1 || !strings.Contains(warnings[0], "layer.0.bias") || !strings.Contains(warnings[0], c.want) {
				t.Fatalf("warnings %q, want one naming the tensor and %q", warnings, c.want)
			}
			if got := viewtest.Tensors(t, v, f.data); len(got) != len(f.want)-1 || got["layer.0.bias"] != nil {
				t.Fatalf("%d tensors served", len(got))
			}
		})
	}
}

func TestDCPMetadataRefusesOtherGlobals(t *testing.T) {
	md, err := os.ReadFile("testdata/2ranks/.metadata")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, to string }{
		{"_StorageInfo", "_StorageInfX"},
		{"PosixPath", "getoutput"},
	} {
		bad := bytes.Replace(md, []byte(c.from), []byte(c.to), 1)
		if _, err := ParseMetadata(bad); err == nil || !strings.Contains(err.Error(), c.to+" refused") {
			t.Fatalf("%q: %v", c.to, err)
		}
	}
	if _, err := ParseMetadata([]byte("\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R.")); err == nil || !strings.Contains(err.Error(), "os.system refused") {
		t.Fatalf("os.system: %v", err)
	}
	bad := bytes.Replace(md, []byte("\x8c\x051.0.0"), []byte("\x8c\x059.9.9"), 1)
	if _, err := ParseMetadata(bad); err == nil || !strings.Contains(err.Error(), "not known") {
		t.Fatalf("version 9.9.9: %v", err)
	}
	// The torch.save reader does not take DCP's classes.
	if _, _, err := pickle.Parse(md, torch.PickleRules()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("a .metadata read as a data.pkl: %v", err)
	}
}

// A .metadata has a larger work budget than a data.pkl, and it is a bound
// all the same, within its memory budget.
// Memoized objects the reader walks again for every use are paid for
// each time.
func TestDCPMetadataWorkIsBounded(t *testing.T) {
	const overBudget = "over the reader's limit"
	for _, tc := range []struct {
		name   string
		pickle []byte
		want   string
	}{
		{"20 MB of DUP", layouttest.DupPickle(20 << 20), overBudget},
		{"one path of 4,000 keys for 20,000 names", layouttest.PlannerDataAgainPickle(4_000, 20_000), overBudget},
		{"one _StorageInfo of 4,000 transforms for 20,000 chunks", layouttest.TransformsAgainPickle(4_000, 20_000), overBudget},
		// A PosixPath of 1,200 references to one 1 MiB string: 1.2 GiB
		// from a 1 MiB file (50,000 references took the daemon down).
		{"one 1 MiB string joined 1,200 times", layouttest.PosixPathAgainPickle(1<<20, 1200, 1), "path of more than 4096 bytes"},
		// Paths under the cap, each 4 KiB built from 6 bytes of the file.
		{"a 4 KiB path built 400,000 times", layouttest.PosixPathAgainPickle(64, 63, 400_000), overBudget},
	} {
		var err error
		if used := layouttest.Allocated(func() { _, err = ParseMetadata(tc.pickle) }); used > memoryBudget(len(tc.pickle)) {
			t.Fatalf("%s: allocated %d bytes for a %d-byte file, budget %d", tc.name, used, len(tc.pickle), memoryBudget(len(tc.pickle)))
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// PosixPath builds paths of up to MaxPath bytes, as PATH_MAX allows.
func TestDCPPathCap(t *testing.T) {
	for _, tc := range []struct {
		partBytes, parts int
		ok               bool
	}{
		{MaxPath, 1, true}, {MaxPath + 1, 1, false},
		{1023, 4, true}, {1024, 4, false}, // 3 separators
		{0, MaxPath + 1, true}, {0, MaxPath + 2, false},
	} {
		_, err := ParseMetadata(layouttest.PosixPathAgainPickle(tc.partBytes, tc.parts, 1))
		if refused := err != nil && strings.Contains(err.Error(), "path of more than"); refused == tc.ok || (tc.ok && err != nil) {
			t.Errorf("%d parts of %d bytes: %v", tc.parts, tc.partBytes, err)
		}
	}
}
