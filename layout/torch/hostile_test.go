package layout

import (
	"bytes"
	"encoding/binary"
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

// A zip whose directory claims more than MaxZipEntries entries is refused
// before archive/zip reads it. The claim is made as archive/zip writes one
// past 65,535 entries: a zip64 end record, its locator, the end record.
func TestParseTorchRefusesHugeDirectory(t *testing.T) {
	le := binary.LittleEndian
	rec := le.AppendUint64([]byte("PK\x06\x06"), 44)          // size of the rest
	rec = le.AppendUint32(le.AppendUint32(rec, 45<<16|45), 0) // versions, this disk
	rec = le.AppendUint32(rec, 0)                             // the directory's disk
	rec = le.AppendUint64(le.AppendUint64(rec, MaxZipEntries+1), MaxZipEntries+1)
	rec = le.AppendUint64(le.AppendUint64(rec, 0), 0) // the directory's size and offset
	loc := le.AppendUint32(le.AppendUint64(le.AppendUint32([]byte("PK\x06\x07"), 0), 0), 1)
	end := le.AppendUint16(le.AppendUint32(le.AppendUint32(le.AppendUint32(le.AppendUint32([]byte("PK\x05\x06"), 0), 0xFFFFFFFF), 0xFFFFFFFF), 0xFFFFFFFF), 0)
	data := append(append(rec, loc...), end...)
	_, _, err := ParseTorch(bytes.NewReader(data), int64(len(data)), NewBudget())
	if err == nil || !strings.Contains(err.Error(), "262145 entries exceed the limit") {
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
	// Headers over MaxViewInline: refused before any is built. (Made
	// without JSON: parsing it is not what is tested, and takes long.)
	many := &Header{Metadata: map[string]string{"format": "pt", "pad": strings.Repeat("x", 60<<10)}}
	for i := range int64(200_000) {
		many.Tensors = append(many.Tensors, Tensor{Name: fmt.Sprint("t", i), DType: "U8", Shape: []int64{1}, Begin: i, End: i + 1})
	}
	if _, _, err := sourcesView([]Source{{Name: "many.safetensors", Header: many}}, ViewSpec{Shards: true, MaxShardSize: 1}); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("error %v", err)
	}
}
