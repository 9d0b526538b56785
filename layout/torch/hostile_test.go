package torch

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/pickle"
	"github.com/ckptfs/ckptfs/layout/view"
)

// pickleMemoryBudget is what one pickle may cost the reader: a multiple of
// its length, plus the work budget's worth of objects.
func pickleMemoryBudget(n int) uint64 { return 64*uint64(n) + 64*pickle.MaxWork }

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
			used := layouttest.Allocated(func() { _, err = parsePickle(tc.pickle) })
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
	h, warnings, err := parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Tensors) != 0 || len(warnings) != 1 || !strings.Contains(warnings[0], "key 0 is a tuple") {
		t.Fatalf("tensors %v, warnings %q", h.Tensors, warnings)
	}
}

func TestParseTorchCapsWarnings(t *testing.T) {
	data := layouttest.TorchZip(layouttest.WideDictPickle(1000), nil)
	_, warnings, err := parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != view.MaxWarnings+1 || !strings.Contains(warnings[view.MaxWarnings], "and 980 more") {
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
	_, _, err := parse(data)
	if err == nil || !strings.Contains(err.Error(), "262145 entries exceed the limit") {
		t.Fatalf("error %v", err)
	}
}
