package layout

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// allocated runs fn and returns the bytes it allocated.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// pickleMemoryBudget is what one pickle may cost the reader: a multiple of
// its length, plus the work budget's worth of objects.
func pickleMemoryBudget(n int) uint64 { return 64*uint64(n) + 64*MaxPickleWork }

// dcpMemoryBudget is pickleMemoryBudget for a .metadata and its view plan.
func dcpMemoryBudget(n int) uint64 { return 64*uint64(n) + 64*MaxDCPWork }

func TestHostilePicklesAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pickle []byte
		want   string // "" when it parses
	}{
		{"key nested 800,000 tuples deep", layouttest.DeepKeyPickle(800_000), ""},
		{"dict of 300,000 keys", layouttest.WideDictPickle(300_000), ""},
		{"list appended to itself", layouttest.SelfListPickle(), ""},
		{"8 MB of DUP", layouttest.DupPickle(8 << 20), "over the reader's limit"},
		{"one list made an OrderedDict 100,000 times", layouttest.OrderedDictAgainPickle(1000, 100_000), "over the reader's limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			used := allocated(func() { _, err = ParsePickle(tc.pickle) })
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if budget := pickleMemoryBudget(len(tc.pickle)); used > budget {
				t.Fatalf("allocated %d bytes for a %d-byte pickle, budget %d", used, len(tc.pickle), budget)
			}
		})
	}
}

func TestParseTorchNamesOddKeysWithoutPrintingThem(t *testing.T) {
	data := layouttest.TorchZip(layouttest.DeepKeyPickle(800_000), nil)
	h, warnings, err := ParseTorch(bytes.NewReader(data), int64(len(data)), NewBudget())
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Tensors) != 0 || len(warnings) != 1 || !strings.Contains(warnings[0], "key 0 is a tuple") {
		t.Fatalf("tensors %v, warnings %q", h.Tensors, warnings)
	}
}

func TestParseTorchCapsWarnings(t *testing.T) {
	data := layouttest.TorchZip(layouttest.WideDictPickle(1000), nil)
	_, warnings, err := ParseTorch(bytes.NewReader(data), int64(len(data)), NewBudget())
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != MaxWarnings+1 || !strings.Contains(warnings[MaxWarnings], "and 980 more") {
		t.Fatalf("%d warnings, last %q", len(warnings), warnings[len(warnings)-1])
	}
}

func TestParseTorchRefusesHugeDirectory(t *testing.T) {
	storages := map[string][]byte{}
	for i := range MaxZipEntries {
		storages[fmt.Sprint(i)] = nil
	}
	data := layouttest.TorchZip([]byte("\x80\x02}."), storages)
	_, _, err := ParseTorch(bytes.NewReader(data), int64(len(data)), NewBudget())
	if err == nil || !strings.Contains(err.Error(), "exceed the limit") {
		t.Fatalf("error %v", err)
	}
}

func TestViewBounds(t *testing.T) {
	parse := func(data []byte) *Header {
		h, err := ParseFile(data, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	big := parse(layouttest.TinyTensorsHeader(2000, 5<<20))
	small := parse(layouttest.TinyTensorsHeader(10, 100))
	for i := range small.Tensors {
		small.Tensors[i].Name = "small." + small.Tensors[i].Name
	}
	// 5 MB of metadata: that source is left out, the other one is served.
	var v *View
	var warnings []string
	var err error
	used := allocated(func() {
		v, warnings, err = sourcesView([]Source{{Name: "big.safetensors", Header: big}, {Name: "small.safetensors", Header: small}}, ViewSpec{Shards: true, MaxShardSize: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "big.safetensors: __metadata__ of") {
		t.Fatalf("warnings %q", warnings)
	}
	if len(v.Files) != 11 { // 10 one-tensor shards and the index
		t.Fatalf("%d files", len(v.Files))
	}
	if used > 16<<20 {
		t.Fatalf("planning allocated %d bytes", used)
	}
	// Headers over MaxViewInline: refused before any is built.
	many := parse(layouttest.TinyTensorsHeader(200_000, 60<<10))
	if _, _, err := sourcesView([]Source{{Name: "many.safetensors", Header: many}}, ViewSpec{Shards: true, MaxShardSize: 1}); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("error %v", err)
	}
}
