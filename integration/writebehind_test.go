package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// waitSettled waits until the mounted store has chunked every file it
// staged, as its live 'ckptfs stat' says.
func waitSettled(t *testing.T, store string) {
	t.Helper()
	waitFor(t, "the staged files chunked", 2*time.Minute, func() bool {
		var st struct {
			StagedFiles int64 `json:"staged_files"`
		}
		if err := json.Unmarshal([]byte(ckptfsStdout(t, store, "stat", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.StagedFiles == 0
	})
}

func stagedFiles(t *testing.T, store string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(store, "staged"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// Saves write behind: a close returns with the file staged, not chunked;
// the content reads back at once, as written and through a view (which
// chunks the folder first), survives a kill -9 of the daemon right after
// the close, and is chunked and its staged file removed in the background,
// fsck clean. --write-through chunks before the close returns.
func TestSavesWriteBehind(t *testing.T) {
	t.Parallel()
	ck := sharedHFCheckpoint(t)
	store := newStore(t)
	m := mountStoreWith(t, plainBin, store)
	run(t, "cp", "-r", ck.dir, m.path("hf"))
	if stagedFiles(t, store) == 0 {
		t.Fatal("no staged file right after the copy: the closes waited for chunking")
	}
	sameTrees(t, ck.dir, m.path("hf"))
	checkTensors(t, "@single", readSafetensors(t, m.path("hf@single", "model.safetensors")), ck.tensors)

	// A file closed, then the daemon killed before it could chunk it.
	data := make([]byte, 96<<20)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	if err := os.WriteFile(m.path("hf", "late.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	m.kill()
	m = mountStoreWith(t, plainBin, store)
	if got := fileHash(t, m.path("hf", "late.bin")); got != fileHashBytes(data) {
		t.Fatal("a file staged before a kill -9 reads differently after the remount")
	}
	os.Remove(m.path("hf", "late.bin")) // its staged file goes unread when it has not settled yet
	sameTrees(t, ck.dir, m.path("hf"))
	if err := os.WriteFile(m.path("hf", "late.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the staged files chunked and removed", time.Minute, func() bool { return stagedFiles(t, store) == 0 })
	if got := fileHash(t, m.path("hf", "late.bin")); got != fileHashBytes(data) {
		t.Fatal("late.bin reads differently once chunked")
	}
	m.unmount()
	fsckClean(t, store)

	// --write-through: nothing is left staged once the copy returns.
	through := newStore(t)
	m = mountStoreWith(t, plainBin, through, "--write-through")
	run(t, "cp", "-r", ck.dir, m.path("hf"))
	if n := stagedFiles(t, through); n != 0 {
		t.Fatalf("--write-through left %d staged files", n)
	}
	sameTrees(t, ck.dir, m.path("hf"))
	m.unmount()
}
