package integration

// Saves write behind: a close stages the file, the settler chunks it later;
// what a staged file holds reads back, and writes go on after it settled.

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/storetest"
)

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

// A file written, fsynced and left quiet until the settler chunked it and
// removed its staged file takes more writes, as does a file unlinked while
// open: the writes start from the content the open file reads, not from a
// staged file that is gone. On the daemon's path: a file on its backing
// file is not chunked before its last close (TestBackedFileSettlesAfterItsLastClose).
func TestWritesAfterTheStagedFileWent(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	m := mountStoreWith(t, plainBin, store, "--daemon-writes")
	first, more := storetest.Random(31, 1<<20), storetest.Random(32, 300<<10)
	kept, err := os.Create(m.path("log"))
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	unlinked, err := os.OpenFile(m.path("gone"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unlinked.Close()
	for _, f := range []*os.File{kept, unlinked} {
		if _, err := f.Write(first); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(m.path("gone")); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, store)
	waitFor(t, "the settled staged files removed", time.Minute, func() bool { return stagedFiles(t, store) == 0 })
	want := append(append([]byte(nil), first...), more...)
	for _, f := range []*os.File{kept, unlinked} {
		if _, err := f.Write(more); err != nil {
			t.Fatalf("write to %s after its staged file went: %v", f.Name(), err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync of %s after its staged file went: %v", f.Name(), err)
		}
		got := make([]byte, len(want)+1)
		if n, err := f.ReadAt(got, 0); n != len(want) || !bytes.Equal(got[:n], want) {
			t.Fatalf("%s reads %d bytes back: %v", f.Name(), n, err)
		}
	}
	if err := kept.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unlinked.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, m.path("log")); !bytes.Equal(got, want) {
		t.Fatal("the appended file reads differently")
	}
	// The unlinked file's staged content goes with its last handle, not at
	// the next mount.
	waitSettled(t, store)
	waitFor(t, "the staged files of the unlinked file removed", time.Minute, func() bool { return stagedFiles(t, store) == 0 })
	m.unmount()
	fsckClean(t, store)
}

// A log appended to and fsynced again and again costs what it appends:
// each commit appends to the staged file in place, where a copy would
// stage the whole file again every time.
func TestAppendAndFsyncCostsWhatItAppends(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	addr := freeAddr(t)
	m := mountStoreWith(t, plainBin, store, "--metrics-addr", addr)
	before := scrape(t, addr)["ckptfs_staged_bytes_total"]
	var want []byte
	for i := range 32 {
		f, err := os.OpenFile(m.path("train.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		line := storetest.Random(int64(i), 1<<20)
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		want = append(want, line...)
	}
	staged := scrape(t, addr)["ckptfs_staged_bytes_total"] - before
	if staged > float64(2*len(want)) {
		t.Fatalf("32 appends of 1 MiB staged %.0f MiB", staged/(1<<20))
	}
	if got := mustRead(t, m.path("train.log")); !bytes.Equal(got, want) {
		t.Fatal("the log reads differently")
	}
	waitSettled(t, store)
	if got := mustRead(t, m.path("train.log")); !bytes.Equal(got, want) {
		t.Fatal("the log reads differently once chunked")
	}
	m.unmount()
	fsckClean(t, store)
}
