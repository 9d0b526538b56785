package integration

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
)

// genTensor is a tensor of a generated checkpoint.
type genTensor struct {
	name  string
	dtype string
	shape []int
	data  []byte
}

// bf16Normal returns n bf16 values drawn from N(0, std), like trained weights.
func bf16Normal(r *rand.Rand, n int, std float64) []byte {
	b := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		bits := math.Float32bits(float32(r.NormFloat64() * std))
		binary.LittleEndian.PutUint16(b[2*i:], uint16(bits>>16))
	}
	return b
}

// writeSafetensors writes tensors in order with encoding/json, independent of
// the code under test.
func writeSafetensors(t testing.TB, path string, ts []genTensor) {
	t.Helper()
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	off := 0
	for _, x := range ts {
		header[x.name] = map[string]any{"dtype": x.dtype, "shape": x.shape, "data_offsets": []int{off, off + len(x.data)}}
		off += len(x.data)
	}
	js, _ := json.Marshal(header)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	binary.Write(f, binary.LittleEndian, uint64(len(js)))
	f.Write(js)
	for _, x := range ts {
		if _, err := f.Write(x.data); err != nil {
			t.Fatal(err)
		}
	}
}

// hfCheckpoint is a generated HF-style sharded folder and its tensors.
type hfCheckpoint struct {
	dir     string
	tensors map[string][]byte
}

var (
	hfOnce sync.Once
	hfGen  *hfCheckpoint
)

// sharedHFCheckpoint generates, once per run, a ~300 MB bf16 checkpoint of
// three shards with index.json, config.json and tokenizer.json.
func sharedHFCheckpoint(t testing.TB) *hfCheckpoint {
	hfOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ckptfs-hf-")
		if err != nil {
			t.Fatal(err)
		}
		hfGen = genHFCheckpoint(t, dir, 3, 50, 1024*1024, 1)
	})
	if hfGen == nil {
		t.Fatal("checkpoint generation failed earlier")
	}
	return hfGen
}

// importShared makes a store holding the shared checkpoint as hf, written
// by the daemon-less import of the binary built without the race detector:
// for tests about what a mount serves, not how it takes writes.
func importShared(t testing.TB, ck *hfCheckpoint) string {
	t.Helper()
	store := newStore(t)
	mustCkptfsWith(t, plainBin, store, "import", ck.dir, "hf")
	return store
}

// genHFCheckpoint writes shards shards of perShard bf16 tensors of elems
// elements each (plus a few odd ones) into dir.
func genHFCheckpoint(t testing.TB, dir string, shards, perShard, elems int, seed int64) *hfCheckpoint {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	ck := &hfCheckpoint{dir: dir, tensors: map[string][]byte{}}
	weightMap := map[string]string{}
	total := 0
	for s := 0; s < shards; s++ {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)
		var ts []genTensor
		for i := 0; i < perShard; i++ {
			n := elems/2 + r.Intn(elems)
			ts = append(ts, genTensor{fmt.Sprintf("layers.%d.w%d", s, i), "BF16", []int{n}, bf16Normal(r, n, 0.02)})
		}
		if s == 0 { // odd ones: a scalar, an empty tensor, an fp32 bias
			ts = append(ts,
				genTensor{"scale", "F32", []int{}, []byte{0, 0, 128, 63}},
				genTensor{"empty", "BF16", []int{0, 4}, nil},
				genTensor{"bias", "F32", []int{3}, make([]byte, 12)})
		}
		for _, x := range ts {
			ck.tensors[x.name] = x.data
			weightMap[x.name] = name
			total += len(x.data)
		}
		writeSafetensors(t, filepath.Join(dir, name), ts)
	}
	idx, _ := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}, "", "  ")
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("model.safetensors.index.json", idx)
	write("config.json", []byte(`{"model_type": "llama", "hidden_size": 1024}`))
	tok := make([]byte, 2<<20)
	r.Read(tok)
	write("tokenizer.json", tok)
	return ck
}

// readSafetensors parses a safetensors file with encoding/json only and
// returns its tensors' bytes, checking offsets tile the buffer.
func readSafetensors(t testing.TB, path string) map[string][]byte {
	t.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(f)
	if (8+n)%8 != 0 {
		t.Fatalf("%s: data does not start 8-aligned", path)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(f[8:8+n], &hdr); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	type span struct{ b, e int }
	var spans []span
	out := map[string][]byte{}
	for k, v := range hdr {
		if k == "__metadata__" {
			continue
		}
		var e struct {
			Offsets [2]int `json:"data_offsets"`
		}
		json.Unmarshal(v, &e)
		out[k] = f[8+int(n)+e.Offsets[0] : 8+int(n)+e.Offsets[1]]
		spans = append(spans, span{e.Offsets[0], e.Offsets[1]})
	}
	sort.Slice(spans, func(i, j int) bool {
		return spans[i].b < spans[j].b || spans[i].b == spans[j].b && spans[i].e < spans[j].e
	})
	pos := 0
	for _, s := range spans {
		if s.b != pos {
			t.Fatalf("%s: offsets do not tile at %d", path, pos)
		}
		pos = s.e
	}
	if pos != len(f)-8-int(n) {
		t.Fatalf("%s: tensors end at %d of %d", path, pos, len(f)-8-int(n))
	}
	return out
}
