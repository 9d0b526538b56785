package torch

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// readRecords reads data as records and checks that they and the rest
// put back together are data.
func readRecords(t testing.TB, data []byte) (Format, []Record, [][]byte) {
	t.Helper()
	var recs []Record
	var bodies [][]byte
	var joined []byte
	format, rest, err := ReadRecords(bufio.NewReader(bytes.NewReader(data)), func(rec Record) error {
		body, err := io.ReadAll(rec.R)
		if int64(len(body)) > rec.Size {
			t.Fatalf("record of %d bytes read %d", rec.Size, len(body))
		}
		recs, bodies = append(recs, rec), append(bodies, body)
		joined = append(joined, body...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tail, err := io.ReadAll(rest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(joined, tail...), data) {
		t.Fatalf("records and rest (%d + %d bytes) are not the %d-byte input", len(joined), len(tail), len(data))
	}
	return format, recs, bodies
}

// The tensors of a torch.save file and of the same weights saved as
// safetensors are the same records, with the same dtypes.
func TestRecordsOfTorchAndSafetensorsMatch(t *testing.T) {
	tensors := func(name string, want Format) map[[32]byte]safetensors.DType {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		format, recs, bodies := readRecords(t, data)
		if format != want {
			t.Fatalf("%s read as %d, want %d", name, format, want)
		}
		out := map[[32]byte]safetensors.DType{}
		for i, rec := range recs {
			if rec.Tensor {
				out[sha256.Sum256(bodies[i])] = rec.DType
			}
		}
		return out
	}
	st := tensors("state_dict.safetensors", Safetensors)
	pt := tensors("state_dict.bin", Zip)
	// All but the views into a shared storage and the transposed tensor
	// (stored contiguous in the safetensors file) are whole storages.
	same := 0
	for sum, dt := range st {
		if got, ok := pt[sum]; ok {
			if got != dt {
				t.Errorf("a %s tensor is a %s record of the torch file", dt, got)
			}
			same++
		}
	}
	if same < len(st)-2 {
		t.Fatalf("%d of %d tensors are records of the torch file", same, len(st))
	}
}

// A truncated or foreign stream is read as far as it goes, never lost.
func TestRecordsOfBrokenStreams(t *testing.T) {
	data, err := os.ReadFile("testdata/state_dict.bin")
	if err != nil {
		t.Fatal(err)
	}
	foreign := make([]byte, 100000)
	rand.New(rand.NewSource(3)).Read(foreign)
	for _, in := range [][]byte{data[:len(data)/2], data[:40], foreign, nil} {
		readRecords(t, in)
	}
}

// FuzzReadRecords: any input, the fixtures first, is read into records and
// a rest that join back to it, within the parsers' memory budget.
func FuzzReadRecords(f *testing.F) {
	names, _ := filepath.Glob("testdata/*")
	distcp, _ := filepath.Glob("../dcp/testdata/*/*.distcp") // archives one after another
	for _, n := range append(names, distcp...) {
		if data, err := os.ReadFile(n); err == nil && filepath.Ext(n) != ".py" && filepath.Ext(n) != ".json" {
			f.Add(data)
		}
	}
	record := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(record)
	f.Add(layouttest.TorchZip(layouttest.SelfListPickle(), map[string][]byte{"0": record}))
	f.Fuzz(func(t *testing.T, data []byte) {
		withinBudget(t, len(data), func() { readRecords(t, data) })
	})
}
