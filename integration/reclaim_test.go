package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// diskUse is what du says dir takes on disk, in bytes.
func diskUse(t testing.TB, dir string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.Fields(run(t, "du", "-s", "--block-size=1", dir))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// randomFile writes n random bytes to p and returns their hash.
func randomFile(t testing.TB, p string, seed int64, n int64) string {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rand.New(rand.NewSource(seed)), n)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// rm -r of a 1 GiB checkpoint while mounted: the store's disk use falls
// back within the reclaim bound, while a reader of another file, unlinked
// too, reads it to the end and a writer saves a third; fsck is clean.
func TestRemoveGivesSpaceBackWhileMounted(t *testing.T) {
	store := newStore(t)
	m := mountStoreWith(t, plainBin, store, "--reclaim-after=2s")
	base := diskUse(t, store)
	os.Mkdir(m.path("big"), 0o755)
	for i := range 4 {
		randomFile(t, m.path("big", fmt.Sprintf("model-%d.safetensors", i)), int64(i), 256<<20)
	}
	readHash := randomFile(t, m.path("read.bin"), 10, 64<<20)
	full := diskUse(t, store)
	if full < base+1<<30 {
		t.Fatalf("store grew %d bytes for 1.06 GiB of random data", full-base)
	}

	reader, err := os.Open(m.path("read.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if err := os.Remove(m.path("read.bin")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var writeHash string
	wg.Add(1)
	go func() { // a writer saving meanwhile
		defer wg.Done()
		writeHash = randomFile(t, m.path("write.bin"), 11, 128<<20)
	}()
	start := time.Now()
	if err := os.RemoveAll(m.path("big")); err != nil {
		t.Fatal(err)
	}
	// The reader reads slowly across several passes.
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for {
		n, err := reader.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read of an unlinked open file: %v", err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != readHash {
		t.Fatal("the unlinked open file read back differs")
	}
	wg.Wait()
	// What stays: the written file (128 MiB) and, until the reader
	// closes, the unlinked one (64 MiB).
	want := base + 192<<20 + 64<<20
	waitFor(t, "the removed checkpoint's space", 60*time.Second, func() bool { return diskUse(t, store) <= want })
	t.Logf("1 GiB removed: disk use %d -> %d MiB in %v (reclaim after 2 s)", full>>20, diskUse(t, store)>>20, time.Since(start).Round(100*time.Millisecond))
	reader.Close()
	waitFor(t, "the closed unlinked file's space", 60*time.Second, func() bool { return diskUse(t, store) <= base+128<<20+64<<20 })
	if got := fileHash(t, m.path("write.bin")); got != writeHash {
		t.Fatal("the file written during the reclaim differs")
	}
	m.unmount()
	fsckClean(t, store)
	m = mountStoreWith(t, plainBin, store)
	if got := fileHash(t, m.path("write.bin")); got != writeHash {
		t.Fatal("the file written during the reclaim differs after remount")
	}
	entries, _ := os.ReadDir(m.dir)
	var names bytes.Buffer
	for _, e := range entries {
		fmt.Fprintln(&names, e.Name())
	}
	if names.String() != "write.bin\n" {
		t.Fatalf("the mount holds %q", names.String())
	}
}
