package integration

// Views: a folder's weights as one file (DIR@single) and as an HF sharded
// folder (DIR@shards[=SIZE]), from safetensors and torch .bin files.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestViews(t *testing.T) {
	t.Parallel() // mostly reads through its own mount; overlaps with the long randomized tests
	ck := sharedHFCheckpoint(t)
	store := importShared(t, ck)
	m := mountStore(t, store)

	t.Run("single", func(t *testing.T) {
		checkTensors(t, "@single", readSafetensors(t, m.path("hf@single", "model.safetensors")), ck.tensors)
		for _, f := range []string{"config.json", "tokenizer.json"} {
			run(t, "cmp", filepath.Join(ck.dir, f), m.path("hf@single", f))
		}
		if _, err := os.Stat(m.path("hf@single", "model-00001-of-00003.safetensors")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("source shard visible in the view: %v", err)
		}
	})
	t.Run("shards", func(t *testing.T) {
		checkTensors(t, "@shards=50MB", readShardedView(t, m.path("hf@shards=50MB"), 50_000_000), ck.tensors)
		checkTensors(t, "@shards", readShardedView(t, m.path("hf@shards"), 5_000_000_000), ck.tensors)
	})
	t.Run("read-only", func(t *testing.T) {
		for _, op := range []func() error{
			func() error { return os.WriteFile(m.path("hf@single", "model.safetensors"), []byte("x"), 0o644) },
			func() error { return os.WriteFile(m.path("hf@single", "new"), []byte("x"), 0o644) },
			func() error { return os.Remove(m.path("hf@single", "config.json")) },
			func() error { return os.Mkdir(m.path("hf@shards", "d"), 0o755) },
		} {
			if err := op(); !errors.Is(err, syscall.EROFS) {
				t.Fatalf("write into a view: %v, want EROFS", err)
			}
		}
	})
	t.Run("not listed, counted once", func(t *testing.T) {
		entries, _ := os.ReadDir(m.dir)
		if len(entries) != 1 || entries[0].Name() != "hf" {
			t.Fatalf("root lists %v", entries)
		}
		du := strings.Fields(run(t, "du", "-sb", m.dir))[0]
		got, _ := strconv.ParseInt(du, 10, 64)
		local, _ := strconv.ParseInt(strings.Fields(run(t, "du", "-sb", ck.dir))[0], 10, 64)
		if got > local*11/10 {
			t.Fatalf("du of the mount %d, of the checkpoint %d", got, local)
		}
	})
	t.Run("no weights", func(t *testing.T) {
		os.Mkdir(m.path("plain"), 0o755)
		os.WriteFile(m.path("plain", "notes.txt"), []byte("hi"), 0o644)
		if _, err := os.Stat(m.path("plain@single")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("view of a folder without weights: %v", err)
		}
	})
	t.Run("nested and single source", func(t *testing.T) {
		os.MkdirAll(m.path("run", "model"), 0o755)
		run(t, "cp", m.path("hf@single", "model.safetensors"), m.path("run", "model", "model.safetensors"))
		checkTensors(t, "run/model@single", readSafetensors(t, m.path("run", "model@single", "model.safetensors")), ck.tensors)
		checkTensors(t, "run/model@shards=100MB", readShardedView(t, m.path("run", "model@shards=100MB"), 100_000_000), ck.tensors)
	})
	t.Run("follows changes and skips malformed", func(t *testing.T) {
		os.Mkdir(m.path("mix"), 0o755)
		run(t, "cp", filepath.Join(ck.dir, "model-00003-of-00003.safetensors"), m.path("mix", "a.safetensors"))
		bad := []byte("\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
		os.WriteFile(m.path("mix", "b.safetensors"), bad, 0o644)
		before := readSafetensors(t, m.path("mix@single", "model.safetensors"))
		if len(before) != 50 {
			t.Fatalf("view of mix has %d tensors", len(before))
		}
		got, _ := os.ReadFile(m.path("mix", "b.safetensors"))
		if !bytes.Equal(got, bad) {
			t.Fatal("malformed file does not round-trip")
		}
		run(t, "cp", filepath.Join(ck.dir, "model-00002-of-00003.safetensors"), m.path("mix", "c.safetensors"))
		waitFor(t, "the view to list the new shard's tensors", 30*time.Second, func() bool {
			return len(readSafetensors(t, m.path("mix@single", "model.safetensors"))) == 100
		})
	})

	// Export without a mount, then compare with what the mount shows.
	m.unmount()
	exported := t.TempDir()
	for _, v := range []string{"hf@single", "hf@shards=50MB", "run/model@shards=100MB"} {
		mustCkptfs(t, store, "export", v, filepath.Join(exported, strings.ReplaceAll(v, "/", "_")))
	}
	m = mountStore(t, store)
	sameTrees(t, filepath.Join(exported, "hf@single"), m.path("hf@single"))
	sameTrees(t, filepath.Join(exported, "hf@shards=50MB"), m.path("hf@shards=50MB"))
	sameTrees(t, filepath.Join(exported, "run_model@shards=100MB"), m.path("run", "model@shards=100MB"))

	t.Run("random preads", func(t *testing.T) {
		want, err := os.ReadFile(filepath.Join(exported, "hf@single", "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(m.path("hf@single", "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r := rand.New(rand.NewSource(7))
		buf := make([]byte, 3<<20)
		for i := 0; i < 1000; i++ {
			off := r.Int63n(int64(len(want)))
			n, err := f.ReadAt(buf[:1+r.Intn(len(buf))], off)
			if err != nil && n == 0 {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
				t.Fatalf("pread at %d+%d differs", off, n)
			}
		}
	})
	t.Run("export errors", func(t *testing.T) {
		m.unmount()
		for _, args := range [][]string{
			{"export", "plain@single", filepath.Join(exported, "x")},
			{"export", "nope@single", filepath.Join(exported, "y")},
			{"export", "hf@shards=huge", filepath.Join(exported, "z")},
			{"export", "hf", filepath.Join(exported, "hf@single")},
		} {
			if out, err := ckptfs(t, store, args...); err == nil {
				t.Fatalf("ckptfs %v succeeded: %s", args, out)
			}
		}
	})
}

// Readers of views, writers, renames and unlinks on one checkpoint at once:
// every read of a view returns a whole, valid file, and the daemon, built
// with -race, reports no race.
func TestConcurrentViewsAndWriters(t *testing.T) {
	ck := sharedHFCheckpoint(t)
	m := mountStoreWith(t, raceBin, importShared(t, ck))
	want := fileHash(t, m.path("hf@single", "model.safetensors"))
	stop := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 3; i++ { // readers of the view
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if got := fileHash(t, m.path("hf@single", "model.safetensors")); got != want {
					// The folder changes only in non-weight files, so the weights stay the same.
					errs <- fmt.Errorf("view read gave a different file")
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // writer, renamer and unlinker of non-weight files in the same folder
		defer wg.Done()
		data := make([]byte, 1<<20)
		for i := 0; time.Now().Before(stop); i++ {
			p := m.path("hf", fmt.Sprintf("extra-%d.bin", i%4))
			if err := os.WriteFile(p, data, 0o644); err != nil {
				errs <- err
				return
			}
			if err := os.Rename(p, m.path("hf", "extra-renamed.bin")); err != nil {
				errs <- err
				return
			}
			if i%3 == 0 {
				if err := os.Remove(m.path("hf", "extra-renamed.bin")); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
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
