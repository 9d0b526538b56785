package integration

// What the store takes on disk: dedup across layouts, compression, space
// given back while mounted, and a disk that fills up.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/storetest"
)

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

func TestStatShowsCompression(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	os.Mkdir(m.path("zeros"), 0o755)
	if err := os.WriteFile(m.path("zeros", "z.bin"), make([]byte, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	out := mustCkptfs(t, store, "stat", "zeros")
	logical := regexp.MustCompile(`logical bytes\s+(\d+)`).FindStringSubmatch(out)
	stored := regexp.MustCompile(`stored bytes\s+(\d+)`).FindStringSubmatch(out)
	if logical == nil || stored == nil {
		t.Fatalf("stat output: %s", out)
	}
	l, _ := strconv.ParseInt(logical[1], 10, 64)
	s, _ := strconv.ParseInt(stored[1], 10, 64)
	if l != 64<<20 || s >= l/100 {
		t.Fatalf("logical %d stored %d", l, s)
	}
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
	t.Parallel() // waits for reclaim passes and a slow reader
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

// A store on a small file system: writes past its space fail with ENOSPC
// (not a crashed daemon), files written before stay intact, and once space
// is freed writing works again.
func TestFullStoreDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	disk := filepath.Join(t.TempDir(), "disk")
	os.Mkdir(disk, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", disk).Run()
	ballast := filepath.Join(disk, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 80<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(disk, "store")
	m := mountStore(t, store)
	first := storetest.Random(1, 30<<20)
	if err := os.WriteFile(m.path("first.bin"), first, 0o644); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(m.path("too-big.bin"), storetest.Random(2, 200<<20), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing past the space: %v, want ENOSPC", err)
	}
	if got, err := os.ReadFile(m.path("first.bin")); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("earlier file after ENOSPC: %v", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	again := storetest.Random(3, 30<<20)
	if err := os.WriteFile(m.path("again.bin"), again, 0o644); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
	if got, err := os.ReadFile(m.path("again.bin")); err != nil || !bytes.Equal(got, again) {
		t.Fatalf("file written after freeing space: %v", err)
	}
	m.unmount()
	fsckClean(t, store)
}

// smallDisk mounts a tmpfs of size MiB with ballast MiB used, for a store.
func smallDisk(t *testing.T, size, ballast int) (dir, ballastPath string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir = filepath.Join(t.TempDir(), "disk")
	os.Mkdir(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	ballastPath = filepath.Join(dir, "ballast")
	if err := os.WriteFile(ballastPath, make([]byte, ballast<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, ballastPath
}

// rootWriteLands fails the test unless root writes data to root.bin of m
// and reads it back, after what another user did.
func rootWriteLands(t *testing.T, m *mount, data []byte, after string) {
	t.Helper()
	if err := os.WriteFile(m.path("root.bin"), data, 0o644); err != nil {
		t.Fatalf("root's %d MiB write after %s: %v", len(data)>>20, after, err)
	}
	if got := mustRead(t, m.path("root.bin")); !bytes.Equal(got, data) {
		t.Fatal("root.bin reads differently")
	}
}

// Another user filling the store's disk leaves root's share of it free,
// written behind or streamed (--write-through): root's write lands after
// the other user's failed with ENOSPC.
func TestRootShareOfTheDisk(t *testing.T) {
	for name, mode := range map[string][]string{"behind": nil, "write-through": {"--write-through"}} {
		t.Run(name, func(t *testing.T) {
			disk, _ := smallDisk(t, 512, 0)
			store := filepath.Join(disk, "store")
			m := mountStoreWith(t, plainBin, store, append([]string{"--allow-other"}, mode...)...)
			openToAll(m.dir)
			nobodysFolder(t, m)
			// uid 65534 writes 600 MiB of random bytes to the 512 MiB disk,
			// and says how far it got.
			out, err := asNobody("/usr/bin/python3", "-c", `
import os, sys
f, n = open(sys.argv[1], "wb", buffering=0), 0
try:
    for _ in range(600):
        n += f.write(os.urandom(1 << 20))
    f.close()
except OSError as e:
    print(n >> 20, e.strerror)`, m.path("u", "fill"))
			var written int
			var cause string
			if _, scanErr := fmt.Sscanf(out, "%d %s", &written, &cause); err != nil || scanErr != nil || !strings.HasPrefix(out[strings.Index(out, " ")+1:], "No space left") {
				t.Fatalf("uid 65534 writing 600 MiB to a 512 MiB disk: %v %q", err, out)
			}
			// Control: it got far before it failed (a failed write never
			// looks saved: the file keeps no byte of it).
			if written < 200 {
				t.Fatalf("uid 65534 wrote %d MiB before ENOSPC", written)
			}
			rootWriteLands(t, m, storetest.Random(34, 32<<20), "another user filled the disk")
			os.Remove(m.path("u", "fill"))
			m.unmount()
		})
	}
}

// A write that fails never looks saved: after ENOSPC, a retried fsync and
// the close fail too, and the file keeps its last committed content, for
// a new file streamed in order and for an existing one rewritten through a
// staging file, which stops short of filling the store's disk.
func TestFailedWriteNeverLooksSaved(t *testing.T) {
	disk, _ := smallDisk(t, 256, 80)
	store := filepath.Join(disk, "store")
	m := mountStore(t, store)
	v1 := storetest.Random(1, 8<<20)
	if err := os.WriteFile(m.path("old.bin"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		flag int
		want []byte // content after the failure
	}{
		{"new.bin", os.O_CREATE | os.O_WRONLY, nil},
		{"old.bin", os.O_RDWR, v1}, // rewritten in place: a staging file
	} {
		f, err := os.OpenFile(m.path(tc.name), tc.flag, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		var werr error
		for i := 0; i < 300 && werr == nil; i++ {
			_, werr = f.WriteAt(storetest.Random(int64(10+i), 1<<20), int64(i)<<20) // distinct: no dedup
		}
		if !errors.Is(werr, syscall.ENOSPC) {
			t.Errorf("%s: writes past the space: %v, want ENOSPC", tc.name, werr)
		}
		for i := range 2 {
			if err := f.Sync(); err == nil {
				t.Errorf("%s: fsync %d after a failed write returned success", tc.name, i+1)
			}
		}
		if _, err := f.WriteAt([]byte("more"), 0); err == nil {
			t.Errorf("%s: a write after the failure succeeded", tc.name)
		}
		if err := f.Close(); err == nil {
			t.Errorf("%s: close after a failed write returned success", tc.name)
		}
		got, err := os.ReadFile(m.path(tc.name))
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %d bytes after the failure (%v), want its last committed %d", tc.name, len(got), err, len(tc.want))
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(disk, &st); err != nil || int64(st.Bavail)*st.Bsize < 32<<20 {
			t.Errorf("%s: %d bytes left on the store's disk: the reserve was written into", tc.name, int64(st.Bavail)*st.Bsize)
		}
	}
	m.unmount()
	fsckClean(t, store)
}

// Hot copies give way to the store: on a disk too full for a write, the
// copies are dropped and the write succeeds.
func TestHotCopiesGiveWayToWrites(t *testing.T) {
	disk, _ := smallDisk(t, 256, 0)
	store := filepath.Join(disk, "store")
	if err := os.MkdirAll(filepath.Join(store, "hot"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A hot copy as an earlier mount left it: 150 MiB of the 256.
	if err := os.WriteFile(filepath.Join(store, "hot", "0123456789abcdef"), make([]byte, 150<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	m := mountStore(t, store, "--hot-size=1GiB")
	data := storetest.Random(4, 60<<20) // with the 64 MiB reserve, more than is free
	if err := os.WriteFile(m.path("w.bin"), data, 0o644); err != nil {
		t.Fatalf("a write the hot copy stood in the way of: %v", err)
	}
	if got, err := os.ReadFile(m.path("w.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file read back: %v", err)
	}
	if _, err := os.Stat(filepath.Join(store, "hot", "0123456789abcdef")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the hot copy is still there: %v", err)
	}
	m.unmount()
	fsckClean(t, store)
}

// Another user's sparse file takes no room from anyone: uid 65534
// truncates a file of its own to the store disk's free space and closes
// it, and root's 8 MiB write still lands (the room kept for settling
// counts what staged files take on disk, not their length).
func TestSparseFileOfAnotherUserTakesNoRoom(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to another user")
	}
	t.Parallel()
	store := newStore(t)
	m := mountStoreWith(t, plainBin, store, "--allow-other")
	openToAll(filepath.Dir(m.dir))
	nobodysFolder(t, m)
	var st syscall.Statfs_t
	if err := syscall.Statfs(store, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	if out, err := asNobody("truncate", "-s", strconv.FormatInt(free, 10), m.path("u", "sparse")); err != nil {
		t.Fatalf("uid 65534's truncate: %v %s", err, out)
	}
	// Control: the file is the other user's and as long as the disk is free.
	if fi, err := os.Stat(m.path("u", "sparse")); err != nil || fi.Size() != free || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("the sparse file: %v", err)
	}
	rootWriteLands(t, m, storetest.Random(33, 8<<20), "another user's sparse file")
	os.Remove(m.path("u", "sparse"))
	m.unmount()
}
