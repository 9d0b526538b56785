package integration

// The CLI and the daemon's other faces: errors, commands against a live
// mount, --json, fstab, metrics, read-only mounts and unmounting.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/storetest"
	"github.com/dustin/go-humanize"
)

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

func TestUnmountWhileBusy(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	os.WriteFile(m.path("held.txt"), []byte("held"), 0o644)
	f, err := os.Open(m.path("held.txt"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := ckptfs(t, store, "umount", m.dir)
	if err == nil || !strings.Contains(strings.ToLower(out), "busy") {
		f.Close()
		t.Fatalf("umount with an open file: %v %s", err, out)
	}
	// Still mounted and serving.
	if b, err := os.ReadFile(m.path("held.txt")); err != nil || string(b) != "held" {
		t.Fatalf("after refused umount: %q %v", b, err)
	}
	// --lazy detaches now; the daemon exits once the file is closed.
	pid := m.pid()
	mustCkptfs(t, store, "umount", "--lazy", m.dir)
	if isMounted(m.dir) {
		t.Fatal("still mounted after --lazy")
	}
	f.Close()
	if !waitExit(pid) {
		t.Fatalf("daemon %d still running after the last file closed", pid)
	}
	if _, err := ckptfs(t, store, "ls"); err != nil {
		t.Fatal("store still locked after a lazy unmount")
	}
}

// TestReadOnlyMount: --read-only serves reads and refuses every change
// with EROFS.
func TestReadOnlyMount(t *testing.T) {
	data := storetest.Random(6, 1<<20)
	store := importedStore(t, "ck", data)
	m := mountStore(t, store, "--read-only")
	readEquals(t, m.path("ck", "f"), data)
	f := m.path("ck", "f")
	for what, err := range map[string]error{
		"create":   os.WriteFile(m.path("ck", "g"), nil, 0o644),
		"open rw":  openErr(f, os.O_RDWR),
		"truncate": os.Truncate(f, 0),
		"mkdir":    os.Mkdir(m.path("d"), 0o755),
		"unlink":   os.Remove(f),
		"rename":   os.Rename(f, m.path("ck", "h")),
		"chmod":    os.Chmod(f, 0o600),
		"symlink":  os.Symlink("f", m.path("ck", "l")),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", what, err)
		}
	}
	readEquals(t, f, data)
}

func openErr(path string, flag int) error {
	f, err := os.OpenFile(path, flag, 0)
	if err == nil {
		f.Close()
	}
	return err
}

// importedStore makes a store holding file as NAME/f, written without a
// mount, so that a mount's first reads of it come from the store.
func importedStore(t *testing.T, name string, data []byte) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	store := newStore(t)
	mustCkptfs(t, store, "import", src, name)
	return store
}

// TestMountThroughFstab: mount(8) reads an fstab line of type fuse.ckptfs
// and runs the mount.fuse.ckptfs helper, which takes the store as source
// and fstab-style options; umount(8) stops the daemon. Then mount -t
// fuse.ckptfs with the store as an option.
func TestMountThroughFstab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mount(8) helpers run as root")
	}
	helper := "/sbin/" + "mount.fuse.ckptfs"
	if _, err := os.Lstat(helper); err == nil {
		t.Skipf("%s is installed; not replacing it", helper)
	}
	if err := os.Symlink(ckptfsBin, helper); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(helper)

	data := storetest.Random(3, 5<<20)
	store := importedStore(t, "ck", data)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fstab := filepath.Join(t.TempDir(), "fstab")
	line := fmt.Sprintf("%s %s fuse.ckptfs ro,nofail,cache_size=64MiB,log_level=debug 0 0\n", store, dir)
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mount", dir)
	cmd.Env = append(os.Environ(), "LIBMOUNT_FSTAB="+fstab)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount %s with %q: %v\n%s", dir, line, err, out)
	}
	m := &mount{t: t, store: store, dir: dir}
	t.Cleanup(m.cleanup)
	if info := mountInfo(dir); !strings.Contains(info, "fuse.ckptfs") || !strings.Contains(info, " ro,") {
		t.Fatalf("mountinfo: %s", info)
	}
	readEquals(t, m.path("ck", "f"), data)
	if err := os.WriteFile(m.path("ck", "g"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write on a ro mount: %v", err)
	}
	pid := m.pid()
	run(t, "umount", dir)
	if !waitExit(pid) {
		t.Fatalf("daemon %d still running after umount", pid)
	}

	// The same by hand, the store as an option.
	run(t, "mount", "-t", "fuse.ckptfs", "-o", "store="+store+",allow_other", "ckptfs", dir)
	if info := mountInfo(dir); !strings.Contains(info, "allow_other") {
		t.Fatalf("mountinfo: %s", info)
	}
	readEquals(t, m.path("ck", "f"), data)
	m.unmount()
}

func mountInfo(dir string) string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " "+dir+" ") {
			return l
		}
	}
	return ""
}

// TestJSONOutputs: ls, stat and fsck --json parse and say what the tables say.
func TestJSONOutputs(t *testing.T) {
	ck := genHFCheckpoint(t, t.TempDir(), 2, 4, 64<<10, 5)
	store := newStore(t)
	mustCkptfs(t, store, "import", ck.dir, "hf")
	mustCkptfs(t, store, "import", filepath.Join(ck.dir, "config.json"), "loose.json")

	var rows []struct {
		Name         string   `json:"name"`
		Type         string   `json:"type"`
		Files        int64    `json:"files"`
		LogicalBytes int64    `json:"logical_bytes"`
		Views        []string `json:"views"`
	}
	decodeJSON(t, mustCkptfs(t, store, "ls", "--json"), &rows)
	table := mustCkptfs(t, store, "ls")
	if len(rows) != 2 || rows[0].Name != "hf" || rows[0].Type != "dir" || len(rows[0].Views) != 2 || rows[1].Type != "file" {
		t.Fatalf("ls --json: %+v", rows)
	}
	for _, r := range rows {
		views := "-"
		if len(r.Views) > 0 {
			views = r.Views[0] + " " + r.Views[1] + "[=SIZE]"
		}
		want := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(r.Name) + `\s+` + strconv.FormatInt(r.Files, 10) + `\s+` +
			regexp.QuoteMeta(humanize.IBytes(uint64(r.LogicalBytes))) + `\s+` + regexp.QuoteMeta(views) + `$`)
		if !want.MatchString(table) {
			t.Errorf("ls table does not show %+v:\n%s", r, table)
		}
	}

	var st struct {
		Name             string  `json:"name"`
		Files            int64   `json:"files"`
		LogicalBytes     int64   `json:"logical_bytes"`
		UniqueBytes      int64   `json:"unique_bytes"`
		StoredBytes      int64   `json:"stored_bytes"`
		DedupRatio       float64 `json:"dedup_ratio"`
		CompressionRatio float64 `json:"compression_ratio"`
	}
	decodeJSON(t, mustCkptfs(t, store, "stat", "--json", "hf"), &st)
	text := mustCkptfs(t, store, "stat", "hf")
	if st.Name != "hf" || st.Files != statField(t, text, "files") || st.LogicalBytes != statField(t, text, "logical bytes") ||
		st.UniqueBytes != statField(t, text, "unique bytes") || st.StoredBytes != statField(t, text, "stored bytes") {
		t.Fatalf("stat --json %+v disagrees with\n%s", st, text)
	}
	if !strings.Contains(text, fmt.Sprintf("compression ratio %.3f", st.CompressionRatio)) || st.StoredBytes >= st.LogicalBytes {
		t.Fatalf("stat --json ratios %+v disagree with\n%s", st, text)
	}

	var fsck struct {
		Files    int64    `json:"files"`
		Chunks   int64    `json:"chunks"`
		Problems []string `json:"problems"`
	}
	decodeJSON(t, mustCkptfs(t, store, "fsck", "--json"), &fsck)
	if fsck.Files != rows[0].Files+rows[1].Files || fsck.Chunks == 0 || fsck.Problems == nil || len(fsck.Problems) != 0 {
		t.Fatalf("fsck --json: %+v", fsck)
	}
	if !strings.Contains(mustCkptfs(t, store, "fsck"), fmt.Sprintf("checked %d files, %d chunks", fsck.Files, fsck.Chunks)) {
		t.Fatal("fsck table disagrees with --json")
	}
}

func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// Unknown fields are fine for the caller's subset; only syntax matters.
		if err2 := json.Unmarshal([]byte(out), v); err2 != nil {
			t.Fatalf("not JSON: %v\n%s", err2, out)
		}
	}
}

// TestMetrics: /metrics counts exactly the bytes read through each kind of
// view and written, and the chunk cache and ingest moved; --pprof serves.
func TestMetrics(t *testing.T) {
	ck := genHFCheckpoint(t, t.TempDir(), 2, 4, 64<<10, 4)
	store := newStore(t)
	mustCkptfs(t, store, "import", ck.dir, "ck")
	addr := freeAddr(t)
	m := mountStore(t, store, "--metrics-addr", addr, "--pprof")
	before := scrape(t, addr)

	data := mustRead(t, m.path("ck", "tokenizer.json"))
	single := mustRead(t, m.path("ck@single", "model.safetensors"))
	checkTensors(t, "@single", readSafetensors(t, m.path("ck@single", "model.safetensors")), ck.tensors)
	// A new file's writes go to its backing file (counted by what it grew
	// by at its close), an append to it through the daemon.
	written := storetest.Random(5, 1<<20+3)
	if err := os.WriteFile(m.path("ck", "new"), written[:1<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.path("ck", "new"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(written[1<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, store) // ingest counts what the settler chunks
	after := scrape(t, addr)
	delta := func(name string) float64 { return after[name] - before[name] }
	for name, want := range map[string]float64{
		`ckptfs_read_bytes_total{view="as_written"}`: float64(len(data)),
		`ckptfs_read_bytes_total{view="single"}`:     float64(len(single)),
		`ckptfs_written_bytes_total`:                 float64(len(written)),
		`ckptfs_ingest_logical_bytes_total`:          float64(len(written)),
	} {
		if got := delta(name); got != want {
			t.Errorf("%s moved by %.0f, want %.0f", name, got, want)
		}
	}
	for _, name := range []string{`ckptfs_chunk_cache_misses_total`, `ckptfs_chunk_cache_loaded_bytes_total`, `ckptfs_chunk_decode_seconds_count`,
		`ckptfs_chunk_store_seconds_count`, `ckptfs_fuse_requests_total{op="read"}`, `ckptfs_fuse_requests_total{op="write"}`} {
		if delta(name) <= 0 {
			t.Errorf("%s did not move", name)
		}
	}
	if _, ok := after["ckptfs_fuse_requests_in_flight"]; !ok {
		t.Error("no ckptfs_fuse_requests_in_flight")
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pprof: %v %v", err, resp)
	}
	resp.Body.Close()
}

// TestCLIAgainstALiveMount: ls, stat and fsck --json against a running
// mount print what they print offline after the unmount; rm and gc work
// through the mount's daemon and give the space back while mounted; fsck
// of the live store is clean while a writer goes on; and the control
// socket serves no other user, even when its mode would let them in.
func TestCLIAgainstALiveMount(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	m := mountStoreWith(t, raceBin, store)
	if err := os.MkdirAll(m.path("scratch", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("scratch", "sub", "a.bin"), storetest.Random(7, 24<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, store) // in packs, not staged
	before := storetest.TreeBytes(t, filepath.Join(store, "packs"))

	// rm goes through the mount, and gc frees the space at once.
	if out := ckptfsStdout(t, store, "rm", "scratch"); !strings.Contains(out, "removed scratch") {
		t.Fatalf("rm: %q", out)
	}
	if _, err := os.Stat(m.path("scratch")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("scratch still in the mount after rm: %v", err)
	}
	out := ckptfsStdout(t, store, "gc")
	if !strings.HasPrefix(out, "freed ") || strings.HasPrefix(out, "freed 0 chunks") {
		t.Fatalf("gc against the live mount freed nothing: %q", out)
	}
	if after := storetest.TreeBytes(t, filepath.Join(store, "packs")); before-after < 20<<20 {
		t.Fatalf("packs %d -> %d bytes: gc did not give the 24 MiB back while mounted", before, after)
	}

	ck := genHFCheckpoint(t, t.TempDir(), 2, 6, 256<<10, 3)
	run(t, "cp", "-r", ck.dir, m.path("hf"))

	// fsck of the live store while a writer saves new files.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			p := m.path("busy", fmt.Sprintf("f%d.bin", i%3))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, storetest.Random(int64(i), 2<<20), 0o644); err != nil {
				writeErr = err
				return
			}
		}
	}()
	for range 2 {
		if out := ckptfsStdout(t, store, "fsck"); !strings.Contains(out, " 0 problems") {
			t.Errorf("fsck of the live store while written to: %s", out)
		}
	}
	stop.Store(true)
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}

	// What was staged is chunked, and what the writer overwrote goes now,
	// so that the store stays as it is from here to the unmount.
	waitSettled(t, store)
	if out := ckptfsStdout(t, store, "gc"); strings.Contains(out, "kept for the next pass") {
		t.Fatalf("gc against a quiet mount kept recent chunks: %s", out)
	}
	commands := [][]string{{"ls", "--json"}, {"stat", "--json"}, {"stat", "hf", "--json"}, {"fsck", "--json"}, {"ls"}, {"stat", "hf"}}
	live := map[string]string{}
	for _, args := range commands {
		live[strings.Join(args, " ")] = ckptfsStdout(t, store, args...)
	}
	if !strings.Contains(live["ls --json"], `"hf@single"`) {
		t.Fatalf("ls --json against the mount: %s", live["ls --json"])
	}

	// Another user: the socket is 0600 in a 0700 store. With the folders
	// and the socket opened up, the daemon still refuses the peer's uid;
	// the same call as root is the control case.
	for d := store; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	sock := filepath.Join(store, "control.sock")
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v, %v; want mode 0600", st, err)
	}
	if out, err := asNobody(ckptfsBin, "--store", store, "ls"); err == nil {
		t.Fatalf("another user listed the store through a 0600 socket: %s", out)
	}
	os.Chmod(sock, 0o666)
	if out, err := asNobody(ckptfsBin, "--store", store, "ls"); err == nil || !strings.Contains(out, "uid 65534 may not use") {
		t.Fatalf("another user through an open socket: %v\n%s", err, out)
	}
	os.Chmod(sock, 0o600)
	os.Chmod(store, 0o700)

	m.unmount()
	for _, args := range commands {
		key := strings.Join(args, " ")
		if offline := ckptfsStdout(t, store, args...); offline != live[key] {
			t.Errorf("ckptfs %s: live and offline differ\nlive:\n%s\noffline:\n%s", key, live[key], offline)
		}
	}
	fsckClean(t, store)
}
