package integration

import (
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// statField reads a number from ckptfs stat output.
func statField(t *testing.T, out, field string) int64 {
	t.Helper()
	m := regexp.MustCompile(field + `\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in stat output:\n%s", field, out)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// The same tensors written as three shards, as one file and as other shards
// are stored once: chunks follow tensor boundaries, not file offsets.
func TestDedupAcrossLayouts(t *testing.T) {
	ck := sharedHFCheckpoint(t)
	var tensorBytes int64
	for _, data := range ck.tensors {
		tensorBytes += int64(len(data))
	}
	store := newStore(t)
	m := mountStoreWith(t, plainBin, store) // about what is stored, not races: the fast daemon
	run(t, "cp", "-r", ck.dir, m.path("hf"))
	run(t, "mkdir", m.path("one-file"))
	run(t, "cp", m.path("hf@single", "model.safetensors"), m.path("one-file", "weights.safetensors"))
	run(t, "cp", "-r", m.path("hf@shards=70MB"), m.path("resharded"))
	run(t, "cmp", filepath.Join(ck.dir, "tokenizer.json"), m.path("resharded", "tokenizer.json"))
	m.unmount()

	out := mustCkptfs(t, store, "stat")
	logical, unique := statField(t, out, "logical bytes"), statField(t, out, "unique bytes")
	if logical < 3*tensorBytes {
		t.Fatalf("logical %d, expected three copies of %d", logical, tensorBytes)
	}
	// One copy of the tensors, the tokenizer once, and small headers.
	if limit := tensorBytes + 3<<20 + 1<<20; unique > limit {
		t.Fatalf("unique bytes %d for three layouts of %d tensor bytes (limit %d)", unique, tensorBytes, limit)
	}
	t.Logf("three layouts: logical %d, unique %d (%.3f)", logical, unique, float64(unique)/float64(logical))
}
