package integration

import (
	"bytes"
	"errors"
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
)

func TestCopyRoundTripAndRemount(t *testing.T) {
	ck := sharedHFCheckpoint(t)
	store := newStore(t)
	m := mountStore(t, store)
	run(t, "cp", "-r", ck.dir, m.path("hf"))
	out1 := filepath.Join(t.TempDir(), "out1")
	run(t, "cp", "-r", m.path("hf"), out1)
	sameTrees(t, ck.dir, out1)
	run(t, "cmp", filepath.Join(ck.dir, "model-00002-of-00003.safetensors"), m.path("hf", "model-00002-of-00003.safetensors"))
	m.unmount()

	m = mountStore(t, store)
	out2 := filepath.Join(t.TempDir(), "out2")
	run(t, "cp", "-r", m.path("hf"), out2)
	sameTrees(t, ck.dir, out2)
	m.unmount()
	fsckClean(t, store)
}

func TestFileOperations(t *testing.T) {
	m := mountStore(t, newStore(t))
	dir := m.path("ck")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// rename over an existing file
	write("a", "new contents")
	write("b", "old")
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if got := read("b"); got != "new contents" {
		t.Fatalf("after rename over: %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("source still there: %v", err)
	}
	// truncate, shorter and longer
	if err := os.Truncate(filepath.Join(dir, "b"), 3); err != nil {
		t.Fatal(err)
	}
	if got := read("b"); got != "new" {
		t.Fatalf("after truncate: %q", got)
	}
	if err := os.Truncate(filepath.Join(dir, "b"), 5); err != nil {
		t.Fatal(err)
	}
	if got := read("b"); got != "new\x00\x00" {
		t.Fatalf("after extending truncate: %q", got)
	}
	// unlink then recreate
	if err := os.Remove(filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	write("b", "again")
	if got := read("b"); got != "again" {
		t.Fatalf("recreated: %q", got)
	}
	// append to an existing file
	f, err := os.OpenFile(filepath.Join(dir, "b"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("+more")
	f.Close()
	if got := read("b"); got != "again+more" {
		t.Fatalf("appended: %q", got)
	}
	// chmod, utimens, symlink, mkdir/rmdir, statfs
	if err := os.Chmod(filepath.Join(dir, "b"), 0o600); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "b"), when, when); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, "b"))
	if st.Mode().Perm() != 0o600 || !st.ModTime().Equal(when) || st.Size() != 10 {
		t.Fatalf("stat: %v %v %d", st.Mode(), st.ModTime(), st.Size())
	}
	if err := os.Symlink("b", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if target, _ := os.Readlink(filepath.Join(dir, "link")); target != "b" || read("link") != "again+more" {
		t.Fatalf("symlink: %q", target)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err == nil {
		t.Fatal("rmdir of a non-empty folder succeeded")
	}
	if err := os.Remove(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(m.dir, &sfs); err != nil || sfs.Blocks == 0 {
		t.Fatalf("statfs: %v %+v", err, sfs)
	}
	// fsync makes a file visible to other openers before close
	f, _ = os.Create(filepath.Join(dir, "synced"))
	f.WriteString("durable")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := read("synced"); got != "durable" {
		t.Fatalf("after fsync: %q", got)
	}
	f.Close()
}

func TestRandomWritesMatchLocalDisk(t *testing.T) {
	m := mountStore(t, newStore(t))
	const size = 64 << 20
	local := filepath.Join(t.TempDir(), "local")
	remote := m.path("random.bin")
	r := rand.New(rand.NewSource(3))
	fl, _ := os.Create(local)
	fr, err := os.Create(remote)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 300; i++ {
		off := r.Int63n(size)
		n := 1 + r.Intn(len(buf))
		r.Read(buf[:n])
		if _, err := fl.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
		if _, err := fr.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 { // read back through the same handle mid-way
			a, b := make([]byte, 4096), make([]byte, 4096)
			fl.ReadAt(a, off)
			fr.ReadAt(b, off)
			if !bytes.Equal(a, b) {
				t.Fatalf("read-back at %d differs", off)
			}
		}
	}
	fl.Close()
	if err := fr.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "cmp", local, remote)
}

func TestConcurrentWriters(t *testing.T) {
	m := mountStore(t, newStore(t))
	var wg sync.WaitGroup
	data := [2][]byte{make([]byte, 40<<20), make([]byte, 40<<20)}
	rand.New(rand.NewSource(4)).Read(data[0])
	rand.New(rand.NewSource(5)).Read(data[1])
	errs := make(chan error, 2)
	for i := range data {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- os.WriteFile(m.path("w"+strconv.Itoa(i)), data[i], 0o644)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range data {
		got, err := os.ReadFile(m.path("w" + strconv.Itoa(i)))
		if err != nil || !bytes.Equal(got, data[i]) {
			t.Fatalf("writer %d: content differs (%v)", i, err)
		}
	}
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

func TestKillDuringCopyKeepsEarlierFiles(t *testing.T) {
	ck := sharedHFCheckpoint(t)
	store := importShared(t, ck)
	m := mountStore(t, store)
	big := filepath.Join(t.TempDir(), "big.bin")
	f, _ := os.Create(big)
	chunk := make([]byte, 8<<20)
	r := rand.New(rand.NewSource(6))
	for i := 0; i < 128; i++ { // 1 GiB
		r.Read(chunk)
		f.Write(chunk)
	}
	f.Close()
	cp := exec.Command("cp", big, m.path("big.bin"))
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the daemon once the copy is under way.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(m.path("big.bin")); err == nil && st.Size() > 100<<20 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.kill()
	cp.Wait() // fails: the mount is gone
	// What the copy wrote: a staging file, or chunks with --write-through.
	written := func() int64 {
		return diskUse(t, filepath.Join(store, "packs")) + diskUse(t, filepath.Join(store, "drafts"))
	}
	killed := written()

	m = mountStore(t, store)
	sameTrees(t, ck.dir, m.path("hf"))
	if st, err := os.Stat(m.path("big.bin")); err == nil && st.Size() != 0 {
		t.Fatalf("interrupted file visible with %d bytes", st.Size())
	}
	m.unmount()
	fsckClean(t, store)
	// The interrupted copy's staging file goes at the next open, its orphan
	// chunks by a reclaim pass of the mount or by gc.
	out := mustCkptfs(t, store, "gc")
	if freed := killed - written(); freed < 64<<20 {
		t.Fatalf("%d bytes of the interrupted copy freed, want over 64 MiB (gc: %s)", freed, out)
	}
}

func TestCLIErrors(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	// Store commands run in the mount's daemon: a failure there is this
	// command's failure, with its message.
	if out, err := ckptfs(t, store, "ls"); err != nil || !strings.HasPrefix(out, "NAME") {
		t.Fatalf("ls on a mounted store: %v %s", err, out)
	}
	if out, err := ckptfs(t, store, "stat", "nosuch"); err == nil || !regexp.MustCompile(`nosuch: no such file`).MatchString(out) {
		t.Fatalf("stat of a missing checkpoint on a mounted store: %v %s", err, out)
	}
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	if out, err := ckptfs(t, newStore(t), "mount", full); err == nil || !regexp.MustCompile(`not empty`).MatchString(out) {
		t.Fatalf("mount on a non-empty dir: %v %s", err, out)
	}
	if out, err := ckptfs(t, newStore(t), "mount", filepath.Join(full, "missing")); err == nil || !regexp.MustCompile(`no such file`).MatchString(out) {
		t.Fatalf("mount on a missing dir: %v %s", err, out)
	}
	other := filepath.Join(t.TempDir(), "m2")
	os.Mkdir(other, 0o755)
	if out, err := ckptfs(t, store, "mount", other); err == nil || !regexp.MustCompile(`mounted at`).MatchString(out) {
		t.Fatalf("second mount of one store: %v %s", err, out)
	}
	m.unmount()
	if out, err := ckptfs(t, store, "stat", "nope"); err == nil || !regexp.MustCompile(`nope`).MatchString(out) {
		t.Fatalf("stat of a missing checkpoint: %v %s", err, out)
	}
}
