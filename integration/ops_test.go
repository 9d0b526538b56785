package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/storetest"
	"github.com/dustin/go-humanize"
)

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
	written := storetest.Random(5, 1<<20+3)
	if err := os.WriteFile(m.path("ck", "new"), written, 0o644); err != nil {
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
	for _, name := range []string{`ckptfs_chunk_cache_misses_total`, `ckptfs_chunk_decode_seconds_count`,
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

// scrape reads the ckptfs_ samples of /metrics: name{labels} to value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "ckptfs_") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[name] = v
	}
	return out
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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

// TestSigtermFinishesWrites: SIGTERM while a file is open for writing lets
// the writer finish; its close commits the whole file, then the daemon
// exits; the next mount serves it, and what was closed before, whole.
func TestSigtermFinishesWrites(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	done := storetest.Random(7, 2<<20)
	if err := os.WriteFile(m.path("done"), done, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(m.path("open"))
	if err != nil {
		t.Fatal(err)
	}
	first, second := storetest.Random(8, 4<<20), storetest.Random(9, 4<<20)
	if _, err := f.Write(first); err != nil {
		t.Fatal(err)
	}
	pid := m.pid()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(second); err != nil {
		t.Fatalf("write after SIGTERM: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after SIGTERM: %v", err)
	}
	if !waitExit(pid) {
		t.Fatal("daemon still running after the writer closed")
	}
	m2 := mountStore(t, store)
	readEquals(t, m2.path("done"), done)
	readEquals(t, m2.path("open"), append(first, second...))
	m2.unmount()
	fsckClean(t, store)
}

// Two handles writing one file give what local disk gives: two O_APPEND
// writers interleave, two writers at offsets both land, and a close of one
// while the other goes on writing loses neither (it was last-close-wins).
func TestTwoWritersLikeLocalDisk(t *testing.T) {
	m := mountStore(t, newStore(t))
	local := t.TempDir()
	scenarios := map[string]func(dir string) error{
		"two O_APPEND writers": func(dir string) error {
			p := filepath.Join(dir, "log.txt")
			a, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			b, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			for i := range 50 {
				fmt.Fprintf(a, "a%d\n", i)
				fmt.Fprintf(b, "b%d\n", i)
			}
			return errors.Join(a.Close(), b.Close())
		},
		"two writers at offsets, closed in turn": func(dir string) error {
			p := filepath.Join(dir, "x.bin")
			if err := os.WriteFile(p, bytes.Repeat([]byte("."), 64), 0o644); err != nil {
				return err
			}
			a, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			b, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			a.WriteAt([]byte("AAAA"), 0)
			b.WriteAt([]byte("BBBB"), 100)
			a.WriteAt([]byte("CC"), 50)
			if err := a.Close(); err != nil {
				return err
			}
			b.WriteAt([]byte("DD"), 10)
			return b.Close()
		},
		"a streaming writer and a second one": func(dir string) error {
			p := filepath.Join(dir, "s.bin")
			a, err := os.Create(p)
			if err != nil {
				return err
			}
			a.Write(storetest.Random(5, 3<<20))
			b, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			b.WriteAt([]byte("second"), 2)
			if err := b.Close(); err != nil {
				return err
			}
			a.Write(storetest.Random(6, 1<<20))
			return a.Close()
		},
	}
	for name, run := range scenarios {
		if err := run(local); err != nil {
			t.Fatalf("%s on local disk: %v", name, err)
		}
		if err := run(m.dir); err != nil {
			t.Fatalf("%s on the mount: %v", name, err)
		}
	}
	for _, f := range []string{"log.txt", "x.bin", "s.bin"} {
		want, _ := os.ReadFile(filepath.Join(local, f))
		got, err := os.ReadFile(m.path(f))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes differ from local disk's %d (%v)", f, len(got), len(want), err)
		}
	}
}
