package integration

// Files the kernel writes itself, on a backing file (FUSE passthrough):
// the same steps on the mount and on ext4 give the same results, with
// passthrough and with --daemon-writes; another user's access still
// follows the modes; a power cut keeps what was fsynced.

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

	"github.com/ckptfs/ckptfs/cache/storetest"
	"golang.org/x/sys/unix"
)

// backedSteps runs, in folder dir, what writers of checkpoints do (a save,
// two writers, an O_APPEND writer, fsync between writes, a truncate, a
// rewrite under a reader that holds the file mapped, as save_pretrained
// over a loaded model does) and says what each reader saw, one line a
// step.
func backedSteps(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	see := func(step string, b []byte) {
		out = append(out, fmt.Sprintf("%s: %d bytes, sha %s", step, len(b), fileHashBytes(b)[:16]))
	}
	seeFile := func(step, name string) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", step, strings.TrimPrefix(err.Error(), "open "+dir)))
			return
		}
		st, _ := os.Stat(filepath.Join(dir, name))
		see(fmt.Sprintf("%s (stat %d)", step, st.Size()), b)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	r := rand.New(rand.NewSource(51))
	random := func(n int) []byte { b := make([]byte, n); r.Read(b); return b }

	// A save: create, write, close.
	must(os.WriteFile(p("save.bin"), random(6<<20+123), 0o644))
	seeFile("save", "save.bin")

	// Two writers of one file see each other's writes at once, and a
	// reader sees them before any close.
	a, err := os.Create(p("two.bin"))
	must(err)
	b, err := os.OpenFile(p("two.bin"), os.O_RDWR, 0)
	must(err)
	_, err = a.WriteAt(random(1<<20), 0)
	must(err)
	_, err = b.WriteAt([]byte("from b"), 100)
	must(err)
	got := make([]byte, 1<<20)
	n, _ := a.ReadAt(got, 0)
	see("a reads b's write", got[:n])
	seeFile("a reader before any close", "two.bin")
	must(b.Close())
	_, err = a.WriteAt(random(4096), 1<<20)
	must(err)
	must(a.Sync())
	seeFile("after fsync", "two.bin")
	must(a.Truncate(5000))
	seeFile("after ftruncate", "two.bin")
	must(a.Close())
	seeFile("closed", "two.bin")

	// O_APPEND writers.
	x, err := os.OpenFile(p("log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(err)
	y, err := os.OpenFile(p("log"), os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	for i := 0; i < 5; i++ {
		_, err = fmt.Fprintf(x, "x%d\n", i)
		must(err)
		_, err = fmt.Fprintf(y, "y%d\n", i)
		must(err)
	}
	must(x.Close())
	must(y.Close())
	seeFile("two appenders", "log")

	// A reader maps the file; a writer truncates and rewrites it, as
	// save_pretrained over a loaded model does.
	old := random(3 << 20)
	must(os.WriteFile(p("model.bin"), old, 0o644))
	m, err := os.Open(p("model.bin"))
	must(err)
	mapped, err := unix.Mmap(int(m.Fd()), 0, 2<<20, unix.PROT_READ, unix.MAP_SHARED)
	must(err)
	see("mapped", mapped)
	next := random(2<<20 + 77)
	must(os.WriteFile(p("model.bin"), next, 0o644))
	see("mapped, after the rewrite", mapped)
	must(unix.Munmap(mapped))
	must(m.Close())
	seeFile("rewritten", "model.bin")

	// A utimens after the last write is what stays.
	must(os.Chtimes(p("save.bin"), time0, time0))
	st, err := os.Stat(p("save.bin"))
	must(err)
	out = append(out, fmt.Sprintf("mtime after utimens: %d", st.ModTime().Unix()))
	return out
}

var time0 = time.Unix(1_600_000_000, 0)

// Every step's result is ext4's, with backing files and without. The
// control: the backed mount answered no WRITE (the kernel wrote), the
// other many.
func TestBackedWritesAsExt4(t *testing.T) {
	local := t.TempDir()
	want := backedSteps(t, local)
	for _, mode := range []struct {
		name   string
		flags  []string
		writes func(float64) bool
	}{
		{"backed", nil, func(n float64) bool { return n < 20 }}, // the appends to an existing file only
		{"daemon", []string{"--daemon-writes"}, func(n float64) bool { return n > 20 }},
	} {
		t.Run(mode.name, func(t *testing.T) {
			addr := freeAddr(t)
			store := newStore(t)
			m := mountStore(t, store, append([]string{"--metrics-addr", addr}, mode.flags...)...)
			got := backedSteps(t, m.dir)
			for i := range want {
				if i >= len(got) || got[i] != want[i] {
					t.Errorf("step %d: mount %q, ext4 %q", i, at(got, i), want[i])
				}
			}
			if writes := scrape(t, addr)[`ckptfs_fuse_requests_total{op="write"}`]; !mode.writes(writes) {
				t.Errorf("%g WRITE requests reached the daemon", writes)
			}
			m.unmount()
			fsckClean(t, store)
			// What was closed is what the next mount serves.
			m = mountStore(t, store)
			for _, name := range []string{"save.bin", "two.bin", "log", "model.bin"} {
				readEquals(t, m.path(name), mustRead(t, filepath.Join(local, name)))
			}
		})
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// Another user reaches a file root is writing on its backing file only as
// its modes allow: a 0600 file refuses it, a 0644 one (the control) lets
// it read what root wrote so far, before root closes it.
func TestBackedFileOfRootFollowsModes(t *testing.T) {
	m := sharedMount(t)
	for _, c := range []struct {
		mode os.FileMode
		want string
	}{{0o600, "Permission denied"}, {0o644, "ok 1048576"}} {
		name := m.path(fmt.Sprintf("root-%o.bin", c.mode))
		f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, c.mode)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(storetest.Random(52, 1<<20)); err != nil {
			t.Fatal(err)
		}
		out, _ := asNobody("/usr/bin/python3", "-c", `
import sys
try:
    print("ok", len(open(sys.argv[1], "rb").read()))
    open(sys.argv[1], "ab").write(b"x")
    print("wrote")
except OSError as e:
    print(e.strerror)`, name)
		if !strings.Contains(out, c.want) || strings.Contains(out, "wrote") {
			t.Errorf("uid 65534 on root's %o file while root writes it: %q, want %q and no write", c.mode, out, c.want)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A file on its backing file stays staged while it is open, however quiet
// (the kernel may write it at any time), readable by others meanwhile, and
// is chunked once the last open closes.
func TestBackedFileSettlesAfterItsLastClose(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	m := mountStore(t, store)
	data := storetest.Random(55, 3<<20)
	f := createWritten(t, m.path("held.bin"), os.O_WRONLY, data, true) // on a backing file
	defer f.Close()
	time.Sleep(7 * time.Second) // past the settler's 5 s of quiet
	// The record's count, not the staged folder's: a settled staged file
	// stays 10 s for readers of the old record.
	var st struct {
		StagedFiles int64 `json:"staged_files"`
	}
	if err := json.Unmarshal([]byte(ckptfsStdout(t, store, "stat", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.StagedFiles != 1 {
		t.Fatalf("%d files staged while the file is open, want it", st.StagedFiles)
	}
	readEquals(t, m.path("held.bin"), data)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, store)
	readEquals(t, m.path("held.bin"), data)
	m.unmount()
	fsckClean(t, store)
}

// A close and what comes right after it (the release reaches the daemon
// after close returns): a utimens, as cp -p and tar make, succeeds, and a
// new version written at once by an O_TRUNC open is the one every later
// read gets, never bytes left in the version the release closed.
func TestBackedCloseThenAtOnce(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	var last []byte
	for i := 0; i < 150; i++ {
		last = storetest.Random(int64(60+i), 64<<10+i)
		if err := os.WriteFile(m.path("v.bin"), last, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(m.path("v.bin"), time0, time0); err != nil {
			t.Fatalf("utimens %d right after the close: %v", i, err)
		}
		readEquals(t, m.path("v.bin"), last)
	}
	waitSettled(t, store)
	readEquals(t, m.path("v.bin"), last)
	if st, err := os.Stat(m.path("v.bin")); err != nil || !st.ModTime().Equal(time0) {
		t.Fatalf("mtime after the last utimens: %v %v", st.ModTime(), err)
	}
	m.unmount()
	fsckClean(t, store)
}

// Another user may read a file root is writing on its backing file, but
// not write it (its writes would pass no space guard): ETXTBSY, and once
// root closed it, the write goes through the daemon (the control).
func TestBackedFileRefusesOtherWriters(t *testing.T) {
	m := sharedMount(t)
	name := m.path("shared.bin")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(storetest.Random(70, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	write := `
import sys
try:
    open(sys.argv[1], "ab").write(b"x")
    print("wrote")
except OSError as e:
    print(e.strerror)`
	if out, _ := asNobody("/usr/bin/python3", "-c", write, name); !strings.Contains(out, "Text file busy") {
		t.Errorf("uid 65534 writing root's file while root writes it: %q, want ETXTBSY", out)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if out, _ := asNobody("/usr/bin/python3", "-c", write, name); !strings.Contains(out, "wrote") {
		t.Errorf("uid 65534 writing root's 0666 file once root closed it: %q", out)
	}
	if st, err := os.Stat(name); err != nil || st.Size() != 1<<20+1 {
		t.Fatalf("after the other user's append: %v %v", st, err)
	}
}

// A power cut keeps what was fsynced of a file written on its backing
// file, and what was written after reads back or not, never wrong bytes.
func TestBackedPowerCutKeepsWhatWasSynced(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	m, log, began := powercutMount(t, store)
	synced, more := storetest.Random(53, 4<<20), storetest.Random(54, 1<<20)
	f := createWritten(t, m.path("ckpt.bin"), os.O_WRONLY, synced, true) // on a backing file, as cp and torch.save
	if _, err := f.Write(more); err != nil {                             // not synced, not closed
		t.Fatal(err)
	}
	// A cut below what was synced, not synced: after the cut the file is
	// either length, never gone (a record naming more than its file).
	cut := createWritten(t, m.path("cut.bin"), os.O_WRONLY, synced, true)
	if err := cut.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	cutPower(t, m, log, began)
	f.Close() // the mount is gone
	cut.Close()

	m = mountStoreWith(t, plainBin, store)
	got, err := os.ReadFile(m.path("ckpt.bin"))
	if err != nil || !bytes.Equal(got, synced) && !bytes.Equal(got, append(synced, more...)) {
		t.Fatalf("a file fsynced on its backing file, then written: %v (%d bytes; want the %d synced, or with the %d after)",
			err, len(got), len(synced), len(more))
	}
	if got, err := os.ReadFile(m.path("cut.bin")); err != nil || !bytes.Equal(got, synced) && !bytes.Equal(got, synced[:1<<20]) {
		t.Fatalf("a file fsynced, then cut short: %v (%d bytes; head equal %v, tail zero %v)", err, len(got), len(got) >= 1<<20 && bytes.Equal(got[:1<<20], synced[:1<<20]), len(got) > 1<<20 && bytes.Count(got[1<<20:], []byte{0}) == len(got)-1<<20)
	}
	waitSettled(t, store)
	m.unmount()
	fsckClean(t, store)
}
