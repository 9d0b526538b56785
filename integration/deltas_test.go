package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// deltaStat is what the delta tests read of 'ckptfs stat --json'.
type deltaStat struct {
	StoredBytes int64 `json:"stored_bytes"`
	DeltaChunks int64 `json:"delta_chunks"`
	StagedFiles int64 `json:"staged_files"`
}

func statOf(t *testing.T, store string, names ...string) deltaStat {
	t.Helper()
	var st deltaStat
	if err := json.Unmarshal([]byte(ckptfsStdout(t, store, append([]string{"stat", "--json"}, names...)...)), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// saveRun writes the versions of a run into sibling folders
// run/step0, run/step1, ... of the mount, oldest first, each fsynced.
func saveRun(t *testing.T, m *mount, run [][]byte) {
	t.Helper()
	for i, data := range run {
		dir := m.path("run", fmt.Sprintf("step%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "model.safetensors"), data, true)
		time.Sleep(10 * time.Millisecond) // one mtime after another, as a run saves them
	}
}

// sameRun fails the test unless every version of the run not in gone
// reads back through dir as saved.
func sameRun(t *testing.T, dir string, run [][]byte, gone map[int]bool) {
	t.Helper()
	for i, want := range run {
		if gone[i] {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, "run", fmt.Sprintf("step%d", i), "model.safetensors"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("version %d: %v (%d bytes, want %d)", i, err, len(got), len(want))
		}
	}
}

// Versions of a checkpoint saved into sibling folders of the mount are
// stored as deltas without being asked, in less space than without; every
// version reads back as saved, after a remount too, after the newest is
// removed and its space reclaimed; fsck is clean throughout.
func TestDeltasThroughTheMount(t *testing.T) {
	t.Parallel()
	run := layouttest.TrainingRun(3, 4, 4, 250_000, 1e-4) // 4 versions of 2 MB
	plain := newStore(t)
	pm := mountStore(t, plain, "--deltas=false")
	saveRun(t, pm, run)
	waitSettled(t, plain)
	before := statOf(t, plain).StoredBytes
	pm.unmount()

	store := newStore(t)
	m := mountStore(t, store, "--reclaim-after", "1s")
	saveRun(t, m, run)
	waitFor(t, "the older versions stored as deltas", 2*time.Minute, func() bool {
		return statOf(t, store).DeltaChunks == 12
	})
	after := statOf(t, store).StoredBytes
	if after*2 > before {
		t.Errorf("stored %d bytes with deltas, %d without", after, before)
	}
	sameRun(t, m.dir, run, nil)
	m.unmount()
	fsckClean(t, store)
	m = mountStore(t, store, "--reclaim-after", "1s")
	sameRun(t, m.dir, run, nil)
	if err := os.RemoveAll(m.path("run", "step3")); err != nil {
		t.Fatal(err)
	}
	mustCkptfs(t, store, "gc")
	sameRun(t, m.dir, run, map[int]bool{3: true})
	m.unmount()
	fsckClean(t, store)
	m = mountStore(t, store)
	sameRun(t, m.dir, run, map[int]bool{3: true})
	t.Logf("%d versions: %d stored bytes with deltas, %d without", len(run), after, before)
}

// kill -9 of the daemon, and the loss of what was not synced, while it
// stores older versions as deltas loses nothing: fsck is clean and every
// version reads back, whether the cut comes before the first version's
// deltas are indexed or after, while the others are encoded.
func TestPowerCutDuringDeltaEncoding(t *testing.T) {
	t.Parallel()
	run := layouttest.TrainingRun(4, 4, 8, 250_000, 1e-4) // 4 versions of 4 MB, 8 tensors each
	r := rand.New(rand.NewSource(31))
	for _, after := range []int64{0, 8} { // deltas indexed before the cut
		store := newStore(t)
		m, log, began := powercutMount(t, store)
		saveRun(t, m, run)
		waitSettled(t, store)
		var encoded int64
		if after == 0 { // the encoder starts once the namespace has been quiet 2 s
			time.Sleep(1500*time.Millisecond + time.Duration(r.Int63n(int64(time.Second))))
		} else {
			waitFor(t, "the first version's deltas", time.Minute, func() bool {
				encoded = statOf(t, store).DeltaChunks
				return encoded >= after
			})
		}
		cutPower(t, m, log, began)
		fsckClean(t, store)
		m = mountStore(t, store)
		sameRun(t, m.dir, run, nil)
		t.Logf("%d chunks stored as deltas at the cut, %d after it", encoded, statOf(t, store).DeltaChunks)
		m.unmount()
		fsckClean(t, store)
	}
}

// A checkpoint whose older versions are deltas goes to a bucket and comes
// back on another node byte for byte: the bucket holds every chunk coded
// alone (see store.StoredValue), so the node pulling needs no other.
func TestRemotePushPullOfDeltas(t *testing.T) {
	t.Parallel()
	s := startMinio(t)
	run := layouttest.TrainingRun(5, 3, 4, 250_000, 1e-4)
	a, b := newStore(t), newStore(t)
	m := mountStore(t, a)
	saveRun(t, m, run)
	waitFor(t, "the older versions stored as deltas", 2*time.Minute, func() bool {
		return statOf(t, a).DeltaChunks == 8
	})
	m.unmount()
	if out := mustCkptfs(t, a, append([]string{"push", "run"}, s.remote()...)...); !strings.Contains(out, "push run: 3 files") {
		t.Fatalf("push: %s", out)
	}
	mustCkptfs(t, b, append([]string{"pull", "run"}, s.remote()...)...)
	fsckClean(t, b)
	mb := mountStore(t, b)
	sameRun(t, mb.dir, run, nil)
	if st := statOf(t, b); st.DeltaChunks != 0 {
		t.Errorf("the pulled store holds %d deltas", st.DeltaChunks)
	}
}
