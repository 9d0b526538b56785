package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// torchFixture is a torch.save file written by layout/torch/testdata/gen.py.
func torchFixture(name string) string {
	return filepath.Join("..", "layout", "torch", "testdata", name)
}

// TestTorchBinViews: a folder whose weights are pytorch_model.bin is served
// as written and, through @single and @shards, as safetensors holding the
// same tensors as the safetensors twin torch wrote of them.
func TestTorchBinViews(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	run(t, "mkdir", m.path("tb"))
	run(t, "cp", torchFixture("state_dict.bin"), m.path("tb", "pytorch_model.bin"))
	if err := os.WriteFile(m.path("tb", "config.json"), []byte(`{"model_type":"bert"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "cmp", torchFixture("state_dict.bin"), m.path("tb", "pytorch_model.bin"))
	want := readSafetensors(t, torchFixture("state_dict.safetensors"))

	checkTensors(t, "@single", readSafetensors(t, m.path("tb@single", "model.safetensors")), want)
	checkTensors(t, "@shards=256", readShardedView(t, m.path("tb@shards=256"), 256), want)
	for _, view := range []string{"tb@single", "tb@shards=256"} {
		names := listNames(t, m.path(view))
		if !strings.Contains(names, "config.json") || strings.Contains(names, ".bin") {
			t.Errorf("%s lists %s", view, names)
		}
	}
	log := string(mustRead(t, filepath.Join(store, "ckptfs.log")))
	for _, left := range []string{"transposed", "complex", "not_a_tensor"} {
		if !strings.Contains(log, left) {
			t.Errorf("no warning about %q in the daemon log", left)
		}
	}
}

// TestTorchBinRefused: a pickle that would run os.system, and a legacy
// (pre-zip) torch.save file, are stored and read back byte for byte and
// given no view; the refusal names the global.
func TestTorchBinRefused(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	for dir, fixture := range map[string]string{"evil": "malicious.bin", "old": "legacy.bin"} {
		run(t, "mkdir", m.path(dir))
		run(t, "cp", torchFixture(fixture), m.path(dir, "pytorch_model.bin"))
		run(t, "cmp", torchFixture(fixture), m.path(dir, "pytorch_model.bin"))
		if _, err := os.Stat(m.path(dir + "@single")); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s@single: %v, want ENOENT", dir, err)
		}
	}
	if _, err := os.Stat("/tmp/ckptfs-pwned"); err == nil {
		t.Fatal("the pickle's command ran")
	}
	if log := string(mustRead(t, filepath.Join(store, "ckptfs.log"))); !strings.Contains(log, "posix.system refused") {
		t.Errorf("daemon log does not name the refused global:\n%s", log)
	}
	m.unmount()
	fsckClean(t, store)
}

func listNames(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}
