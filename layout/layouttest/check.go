package layouttest

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
)

// Allocated runs fn and returns the bytes it allocated.
func Allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// WithinBudget fails t if fn, reading an input of n bytes, allocates more
// than budget bytes.
func WithinBudget(t testing.TB, n int, budget uint64, fn func()) {
	t.Helper()
	if used := Allocated(fn); used > budget {
		t.Fatalf("allocated %d bytes for a %d-byte input, budget %d", used, n, budget)
	}
}

// HostilePickles are deep, wide and amplifying pickles, small enough that
// their mutations run fast: seeds for the fuzz targets of every pickle
// reader.
func HostilePickles() [][]byte {
	return [][]byte{
		DeepKeyPickle(20_000),
		WideDictPickle(5_000),
		DupPickle(100_000),
		OrderedDictAgainPickle(100, 1_000),
		SelfListPickle(),
		PlannerDataAgainPickle(100, 1_000),
		TransformsAgainPickle(100, 1_000),
		PosixPathAgainPickle(64, 63, 1_000),
		PosixPathAgainPickle(10_000, 1_000, 1),
	}
}

// ParseSafetensors reads a safetensors file with encoding/json only and
// returns tensor name -> bytes, plus the names in offset order. It fails
// t unless the data buffer starts 8-byte aligned, __metadata__ says
// "format": "pt" and the tensors tile the buffer.
func ParseSafetensors(t testing.TB, f []byte) (map[string][]byte, []string) {
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

// ReadFixture hands each file of fixture folder dir that matches glob to
// add, in name order, and returns the tensors its reference.safetensors
// holds by name.
func ReadFixture(t testing.TB, dir, glob string, add func(name string, b []byte)) map[string][]byte {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, glob))
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		add(filepath.Base(name), b)
	}
	ref, err := os.ReadFile(filepath.Join(dir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ParseSafetensors(t, ref)
	return want
}
