package integration

// Hot copies: decoded copies of files read often, served by FUSE passthrough.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// With --hot-as-written, a file opened twice gets a hot copy; the next opens
// read it through FUSE passthrough, by read(2) and by mmap, and get the same
// bytes.
func TestHotCopyServesSameBytes(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store, "--hot-as-written", "--log-level", "debug")
	data := make([]byte, 24<<20+4321)
	rand.New(rand.NewSource(13)).Read(data)
	if err := os.WriteFile(m.path("w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	readEquals(t, m.path("w.bin"), data) // staged content: no copy
	waitSettled(t, store)
	readEquals(t, m.path("w.bin"), data)
	readEquals(t, m.path("w.bin"), data) // the second open makes a copy
	waitHotCopy(t, store)
	for i := 0; i < 2; i++ {
		readEquals(t, m.path("w.bin"), data)
	}
	mmapEquals(t, m.path("w.bin"), data)
	if log, _ := os.ReadFile(filepath.Join(store, "ckptfs.log")); !bytes.Contains(log, []byte("open from hot copy")) {
		t.Fatal("no open used the hot copy")
	}

	// A remount finds the copy again.
	m.unmount()
	m = mountStore(t, store, "--hot-as-written")
	readEquals(t, m.path("w.bin"), data)
}

// While a reader holds the hot copy open the content cannot change (the
// kernel would fail a page-cache open of an inode in passthrough mode):
// opening it for writing and truncating it get ETXTBSY, other readers share
// the copy. Once the reader closes, a write goes through and the next open
// sees the new content, not the copy of the old one.
func TestHotCopyThenWrite(t *testing.T) {
	store := newStore(t)
	m := mountStoreWith(t, raceBin, store, "--hot-as-written")
	r := rand.New(rand.NewSource(14))
	old := make([]byte, 8<<20)
	r.Read(old)
	os.WriteFile(m.path("f"), old, 0o644)
	waitSettled(t, store) // staged content gets no copy
	readEquals(t, m.path("f"), old)
	readEquals(t, m.path("f"), old)
	waitHotCopy(t, store)

	reader, err := os.Open(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	next := make([]byte, 9<<20)
	r.Read(next)
	if err := os.WriteFile(m.path("f"), next, 0o644); !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("write while a hot reader is open: %v, want ETXTBSY", err)
	}
	if err := os.Truncate(m.path("f"), 10); !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("truncate while a hot reader is open: %v, want ETXTBSY", err)
	}
	readEquals(t, m.path("f"), old)
	reader.Close()

	// The release of a closed file reaches the daemon after close(2)
	// returns; the write right after must not fail for that.
	readEquals(t, m.path("f"), old)
	if err := os.WriteFile(m.path("f"), next, 0o644); err != nil {
		t.Fatalf("write after the readers closed: %v", err)
	}
	readEquals(t, m.path("f"), next)
	mmapEquals(t, m.path("f"), next)
}

func mmapEquals(t *testing.T, path string, want []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := syscall.Mmap(int(f.Fd()), 0, len(want), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", path, err)
	}
	defer syscall.Munmap(b)
	if !bytes.Equal(b, want) {
		t.Fatalf("%s: mapped bytes differ", path)
	}
}

// waitHotCopy waits for a finished copy in the store's hot directory.
func waitHotCopy(t *testing.T, store string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		entries, _ := os.ReadDir(filepath.Join(store, "hot"))
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".partial") {
				return
			}
		}
	}
	t.Fatal("no hot copy after reading the file")
}

// A view file opened twice is served from its hot copy after, and a folder
// change that keeps every size and time still changes what the view
// serves: copies of view files are named by the content of the folder.
func TestHotCopyOfViewFile(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store, "--log-level", "debug")
	ck := genHFCheckpoint(t, t.TempDir(), 2, 8, 512<<10, 21)
	run(t, "cp", "-r", ck.dir, m.path("ck"))
	single := m.path("ck@single", "model.safetensors")
	checkTensors(t, "@single", readSafetensors(t, single), ck.tensors)
	checkTensors(t, "@single", readSafetensors(t, single), ck.tensors)
	waitHotCopy(t, store)
	before := fileHash(t, single)
	checkTensors(t, "@single from its hot copy", readSafetensors(t, single), ck.tensors)
	mmapEquals(t, single, mustRead(t, single))
	if log := mustRead(t, filepath.Join(store, "ckptfs.log")); !bytes.Contains(log, []byte("open from hot copy\" file=ck@single/model.safetensors")) {
		t.Fatal("no open of the view file used its hot copy")
	}

	shard := filepath.Join(ck.dir, "model-00002-of-00002.safetensors")
	st, _ := os.Stat(m.path("ck", filepath.Base(shard)))
	b := mustRead(t, shard)
	for i := 8 + int(binary.LittleEndian.Uint64(b)); i < len(b); i++ {
		b[i] ^= 0xff // other values, same header
	}
	for name, data := range ck.tensors {
		if strings.HasPrefix(name, "layers.1.") { // the tensors of shard 2
			flipped := make([]byte, len(data))
			for i := range data {
				flipped[i] = data[i] ^ 0xff
			}
			ck.tensors[name] = flipped
		}
	}
	if err := os.WriteFile(m.path("ck", filepath.Base(shard)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(m.path("ck", filepath.Base(shard)), st.ModTime(), st.ModTime())
	waitFor(t, "the view to change", 5*time.Second, func() bool { return fileHash(t, single) != before })
	checkTensors(t, "@single after a same-size change", readSafetensors(t, single), ck.tensors)
}
