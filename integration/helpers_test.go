// Package integration runs ckptfs end to end: the real binary, a real kernel
// FUSE mount, a real Badger store on disk, a real MinIO server.
//
// This file holds what the tests share: the daemons and mounts, the CLI,
// waiting, comparing, generated checkpoints, another user, metrics and
// MinIO. Each other file holds the tests of one mechanism and is named for
// it: posix, randomops, writebehind, crash (SIGTERM, kill -9, power cut),
// corruption, space, views, hot (copies), access (other users), hostile
// (input), cli, remote (a bucket) and bench (benchmarks).
package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The ckptfs binaries built for this run. The race detector slows a
// daemon 5-10x, so raceBin serves the tests whose point is concurrency and
// plainBin the others; without make stress's variables raceBin is plainBin
// (make test's unit tests run under -race). ckptfsBin is the one
// mountStore and the CLI helpers use: plainBin, or raceBin for every test
// when CKPTFS_RACE_DAEMON is set (make stress).
var ckptfsBin, raceBin, plainBin string

// binDir holds the binaries this run builds, removed at its end.
var binDir string

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		fmt.Fprintln(os.Stderr, "integration tests need fusermount3 (apt-get install -y fuse3)")
		os.Exit(1)
	}
	var err error
	if binDir, err = os.MkdirTemp("", "ckptfs-bin-"); err != nil {
		panic(err)
	}
	raceBin, plainBin = filepath.Join(binDir, "ckptfs-race"), filepath.Join(binDir, "ckptfs-plain")
	builds := map[string][]string{plainBin: nil}
	if prebuilt := os.Getenv("CKPTFS_BIN"); prebuilt != "" {
		// make's bin/ckptfs: the suite tests the binary that ships, and make
		// test's two runs of the suite build no daemon of their own.
		if _, err := os.Stat(prebuilt); err != nil || !filepath.IsAbs(prebuilt) {
			fmt.Fprintf(os.Stderr, "CKPTFS_BIN=%s: the daemon to test must be an absolute path to a binary (%v)\n", prebuilt, err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "testing the daemon at %s (CKPTFS_BIN)\n", prebuilt)
		delete(builds, plainBin)
		plainBin = prebuilt
	}
	if raceDaemonWanted() {
		builds[raceBin] = []string{"-race"}
	} else {
		raceBin = plainBin
	}
	ckptfsBin = plainBin
	if os.Getenv("CKPTFS_RACE_DAEMON") != "" {
		ckptfsBin = raceBin
	}
	var wg sync.WaitGroup
	for bin, flags := range builds {
		wg.Go(func() {
			if err := buildDaemon(bin, flags...); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		})
	}
	wg.Wait()
	code := m.Run()
	os.RemoveAll(binDir)
	if hfGen != nil {
		os.RemoveAll(hfGen.dir) // the checkpoint shared by the tests
	}
	os.Exit(code)
}

// buildDaemon builds cmd/ckptfs into out with flags, as make build builds
// bin/ckptfs (static, paths trimmed), so that its build cache serves; with
// the race detector, which needs cgo, with cgo.
func buildDaemon(out string, flags ...string) error {
	cgo := "CGO_ENABLED=0"
	if slices.Contains(flags, "-race") {
		cgo = "CGO_ENABLED=1"
	}
	cmd := exec.Command("go", append(append([]string{"build", "-trimpath"}, flags...), "-o", out, "../cmd/ckptfs")...)
	cmd.Env = append(os.Environ(), cgo)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build ckptfs %v: %v\n%s", flags, err, msg)
	}
	return nil
}

// raceDaemonWanted says whether this run builds the daemon with the race
// detector: make stress's (CKPTFS_RACE_DAEMON, CKPTFS_RACE_STEPS). make
// test leaves it out, its unit tests run under -race.
func raceDaemonWanted() bool {
	return os.Getenv("CKPTFS_RACE_DAEMON") != "" || os.Getenv("CKPTFS_RACE_STEPS") != ""
}

// Mounts: one daemon each, on a temporary store and mountpoint.

// mount is one running ckptfs daemon on a temporary mountpoint.
type mount struct {
	t     testing.TB
	store string
	dir   string
}

// newStore makes an empty store directory removed at the end of the test.
func newStore(t testing.TB) string {
	return filepath.Join(t.TempDir(), "store")
}

// mountStore mounts store on a fresh directory; the mount is removed at the
// end of the test however the test ends.
func mountStore(t testing.TB, store string, extra ...string) *mount {
	t.Helper()
	return mountStoreWith(t, ckptfsBin, store, extra...)
}

// mountStoreWith mounts with the daemon binary bin.
func mountStoreWith(t testing.TB, bin, store string, extra ...string) *mount {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustCkptfsWith(t, bin, store, append([]string{"mount"}, append(extra, dir)...)...)
	m := &mount{t: t, store: store, dir: dir}
	t.Cleanup(m.cleanup)
	return m
}

func (m *mount) path(p ...string) string { return filepath.Join(append([]string{m.dir}, p...)...) }

// pid is the daemon's process id.
func (m *mount) pid() int {
	b, err := os.ReadFile(filepath.Join(m.store, "mount.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	return pid
}

// unmount flushes and unmounts, failing the test on error.
func (m *mount) unmount() {
	m.t.Helper()
	mustCkptfs(m.t, m.store, "umount", m.dir)
}

// kill stops the daemon with SIGKILL and detaches the dead mount.
func (m *mount) kill() {
	if pid := m.pid(); pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
		waitExit(pid)
	}
	exec.Command("fusermount3", "-u", "-z", m.dir).Run()
}

func (m *mount) cleanup() {
	if isMounted(m.dir) {
		if _, err := ckptfs(m.t, m.store, "umount", m.dir); err != nil {
			m.kill()
		}
	}
	// A daemon built with -race logs what it finds: a report fails the test.
	log, _ := os.ReadFile(filepath.Join(m.store, "ckptfs.log"))
	if bytes.Contains(log, []byte("DATA RACE")) {
		m.t.Errorf("data race in the daemon:\n%s", log)
	} else if m.t.Failed() {
		m.t.Logf("the daemon of %s warned:\n%s", m.dir, warnings(log))
	}
}

// warnings are the last 40 lines of a daemon's log at WARN or ERROR: what
// a failed test's daemon had to say.
func warnings(log []byte) string {
	var out []string
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			out = append(out, line)
		}
	}
	return strings.Join(out[max(0, len(out)-40):], "\n")
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return bytes.Contains(b, []byte(" "+dir+" "))
}

// waitExit waits up to a minute for process pid to exit.
func waitExit(pid int) bool {
	for i := 0; i < 6000; i++ {
		if exited(pid) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// exited reports whether process pid has exited: gone, or a zombie whose
// threads are all gone. A daemon's parent is init, which may reap it
// seconds later; by then it holds no file, lock or mount any more.
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z' {
		return false
	}
	threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(threads) <= 1
}

// The CLI, and commands run on the test's behalf.

// ckptfs runs a CLI command against store and returns its output.
func ckptfs(t testing.TB, store string, args ...string) (string, error) {
	return ckptfsWith(t, ckptfsBin, store, args...)
}

func ckptfsWith(t testing.TB, bin, store string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--store", store}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustCkptfs(t testing.TB, store string, args ...string) string {
	t.Helper()
	return mustCkptfsWith(t, ckptfsBin, store, args...)
}

func mustCkptfsWith(t testing.TB, bin, store string, args ...string) string {
	t.Helper()
	out, err := ckptfsWith(t, bin, store, args...)
	if err != nil {
		t.Fatalf("ckptfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// ckptfsStdout runs a CLI command against store and returns what it
// printed on stdout alone, failing the test if it fails.
func ckptfsStdout(t *testing.T, store string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ckptfsBin, append([]string{"--store", store}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ckptfs %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// fsckClean fails the test unless ckptfs fsck finds no problem in store.
func fsckClean(t testing.TB, store string) {
	t.Helper()
	if out := mustCkptfs(t, store, "fsck"); !strings.Contains(out, " 0 problems") {
		t.Fatalf("fsck: %s", out)
	}
}

// statField reads a number from ckptfs stat output.
func statField(t *testing.T, out, field string) int64 {
	t.Helper()
	m := regexp.MustCompile(field + `\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in stat output:\n%s", field, out)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// run runs a command with a timeout and fails the test on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// envInt reads a positive count from the environment, else def: how make
// stress lengthens the randomized tests.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// Waiting for what a daemon does in the background.

// waitFor polls cond until it holds, for up to limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
	}
}

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

// What files hold and what they take.

// treeHashes maps every regular file below root to its SHA-256.
func treeHashes(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = fileHash(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileHash(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func fileHashBytes(b []byte) string {
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

func sameTrees(t testing.TB, a, b string) {
	t.Helper()
	ha, hb := treeHashes(t, a), treeHashes(t, b)
	if len(ha) != len(hb) {
		t.Fatalf("%s has %d files, %s has %d", a, len(ha), b, len(hb))
	}
	for k, v := range ha {
		if hb[k] != v {
			t.Fatalf("%s differs between %s and %s", k, a, b)
		}
	}
}

func readEquals(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d written", path, len(got), len(want))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func listNames(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// diskUse is what du says dir takes on disk, in bytes.
func diskUse(t testing.TB, dir string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.Fields(run(t, "du", "-s", "--block-size=1", dir))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Checkpoints: generated ones, the one shared by a run, the packaged torch
// fixtures, and a safetensors reader independent of the code under test.

// genTensor is a tensor of a generated checkpoint.
type genTensor struct {
	name  string
	dtype string
	shape []int
	data  []byte
}

// bf16Normal returns n bf16 values drawn from N(0, std), like trained weights.
func bf16Normal(r *rand.Rand, n int, std float64) []byte {
	b := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		bits := math.Float32bits(float32(r.NormFloat64() * std))
		binary.LittleEndian.PutUint16(b[2*i:], uint16(bits>>16))
	}
	return b
}

// writeSafetensors writes tensors in order with encoding/json, independent of
// the code under test.
func writeSafetensors(t testing.TB, path string, ts []genTensor) {
	t.Helper()
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	off := 0
	for _, x := range ts {
		header[x.name] = map[string]any{"dtype": x.dtype, "shape": x.shape, "data_offsets": []int{off, off + len(x.data)}}
		off += len(x.data)
	}
	js, _ := json.Marshal(header)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	binary.Write(f, binary.LittleEndian, uint64(len(js)))
	f.Write(js)
	for _, x := range ts {
		if _, err := f.Write(x.data); err != nil {
			t.Fatal(err)
		}
	}
}

// hfCheckpoint is a generated HF-style sharded folder and its tensors.
type hfCheckpoint struct {
	dir     string
	tensors map[string][]byte
}

var (
	hfOnce sync.Once
	hfGen  *hfCheckpoint
)

// sharedHFCheckpoint generates, once per run, a ~300 MB bf16 checkpoint of
// three shards with index.json, config.json and tokenizer.json.
func sharedHFCheckpoint(t testing.TB) *hfCheckpoint {
	hfOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ckptfs-hf-")
		if err != nil {
			t.Fatal(err)
		}
		hfGen = genHFCheckpoint(t, dir, 3, 50, 1024*1024, 1)
	})
	if hfGen == nil {
		t.Fatal("checkpoint generation failed earlier")
	}
	return hfGen
}

// importShared makes a store holding the shared checkpoint as hf, written
// by the daemon-less import of the binary built without the race detector:
// for tests about what a mount serves, not how it takes writes.
func importShared(t testing.TB, ck *hfCheckpoint) string {
	t.Helper()
	store := newStore(t)
	mustCkptfsWith(t, plainBin, store, "import", ck.dir, "hf")
	return store
}

// genHFCheckpoint writes shards shards of perShard bf16 tensors of elems
// elements each (plus a few odd ones) into dir.
func genHFCheckpoint(t testing.TB, dir string, shards, perShard, elems int, seed int64) *hfCheckpoint {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	ck := &hfCheckpoint{dir: dir, tensors: map[string][]byte{}}
	weightMap := map[string]string{}
	total := 0
	for s := 0; s < shards; s++ {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)
		var ts []genTensor
		for i := 0; i < perShard; i++ {
			n := elems/2 + r.Intn(elems)
			ts = append(ts, genTensor{fmt.Sprintf("layers.%d.w%d", s, i), "BF16", []int{n}, bf16Normal(r, n, 0.02)})
		}
		if s == 0 { // odd ones: a scalar, an empty tensor, an fp32 bias
			ts = append(ts,
				genTensor{"scale", "F32", []int{}, []byte{0, 0, 128, 63}},
				genTensor{"empty", "BF16", []int{0, 4}, nil},
				genTensor{"bias", "F32", []int{3}, make([]byte, 12)})
		}
		for _, x := range ts {
			ck.tensors[x.name] = x.data
			weightMap[x.name] = name
			total += len(x.data)
		}
		writeSafetensors(t, filepath.Join(dir, name), ts)
	}
	idx, _ := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}, "", "  ")
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("model.safetensors.index.json", idx)
	write("config.json", []byte(`{"model_type": "llama", "hidden_size": 1024}`))
	tok := make([]byte, 2<<20)
	r.Read(tok)
	write("tokenizer.json", tok)
	return ck
}

// torchFixture is a torch.save file written by layout/torch/testdata/gen.py.
func torchFixture(name string) string {
	return filepath.Join("..", "layout", "torch", "testdata", name)
}

// readSafetensors parses a safetensors file with encoding/json only and
// returns its tensors' bytes, checking offsets tile the buffer.
func readSafetensors(t testing.TB, path string) map[string][]byte {
	t.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(f)
	if (8+n)%8 != 0 {
		t.Fatalf("%s: data does not start 8-aligned", path)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(f[8:8+n], &hdr); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	type span struct{ b, e int }
	var spans []span
	out := map[string][]byte{}
	for k, v := range hdr {
		if k == "__metadata__" {
			continue
		}
		var e struct {
			Offsets [2]int `json:"data_offsets"`
		}
		json.Unmarshal(v, &e)
		out[k] = f[8+int(n)+e.Offsets[0] : 8+int(n)+e.Offsets[1]]
		spans = append(spans, span{e.Offsets[0], e.Offsets[1]})
	}
	sort.Slice(spans, func(i, j int) bool {
		return spans[i].b < spans[j].b || spans[i].b == spans[j].b && spans[i].e < spans[j].e
	})
	pos := 0
	for _, s := range spans {
		if s.b != pos {
			t.Fatalf("%s: offsets do not tile at %d", path, pos)
		}
		pos = s.e
	}
	if pos != len(f)-8-int(n) {
		t.Fatalf("%s: tensors end at %d of %d", path, pos, len(f)-8-int(n))
	}
	return out
}

// readShardedView reads an HF sharded folder: its index and every shard.
func readShardedView(t *testing.T, dir string, maxShard int64) map[string][]byte {
	t.Helper()
	var idx struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	all := map[string][]byte{}
	shards := map[string]bool{}
	for _, f := range idx.WeightMap {
		shards[f] = true
	}
	var total int64
	for f := range shards {
		ts := readSafetensors(t, filepath.Join(dir, f))
		var size int64
		for name, data := range ts {
			if idx.WeightMap[name] != f {
				t.Fatalf("index puts %s in %s, found in %s", name, idx.WeightMap[name], f)
			}
			all[name] = data
			size += int64(len(data))
		}
		if size > maxShard && len(ts) > 1 {
			t.Fatalf("%s holds %d bytes in %d tensors, max %d", f, size, len(ts), maxShard)
		}
		total += size
	}
	if idx.Metadata["total_size"] != total {
		t.Fatalf("total_size %d, tensors add to %d", idx.Metadata["total_size"], total)
	}
	return all
}

// checkTensors asserts that got holds exactly the tensors of want.
func checkTensors(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d tensors, want %d", what, len(got), len(want))
	}
	for name, data := range want {
		if !bytes.Equal(got[name], data) {
			t.Fatalf("%s: tensor %s differs", what, name)
		}
	}
}

// Another user: uid 65534 through setpriv, on a mount with --allow-other.

// asNobody runs a command as uid/gid 65534 and returns its error.
func asNobody(name string, args ...string) (string, error) {
	out, err := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", name}, args...)...).CombinedOutput()
	return string(out), err
}

// openToAll lets every user search dir and the folders above it, up to
// the temporary folder: test temp dirs are 0700, and a path below one
// would make every other-user test pass vacuously.
func openToAll(dir string) {
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
}

// nobodysFolder makes folder u of mount m, owned by uid 65534, and
// returns its path.
func nobodysFolder(t *testing.T, m *mount) string {
	t.Helper()
	u := m.path("u")
	if err := os.Mkdir(u, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(u, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return u
}

// sharedMount mounts a new store with --allow-other, its parent folders
// opened to all, for tests that read as another user (root only).
func sharedMount(t *testing.T) *mount {
	return sharedMountWith(t, ckptfsBin)
}

// sharedMountWith is sharedMount with the daemon binary bin.
func sharedMountWith(t *testing.T, bin string) *mount {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to another user")
	}
	m := mountStoreWith(t, bin, newStore(t), "--allow-other")
	openToAll(filepath.Dir(m.dir))
	return m
}

// addressSpaceCapped is a program that runs bin with its address space
// capped at limit bytes (prlimit --as), inherited by the daemon it
// starts: a daemon that asks for more fails at once instead of taking the
// machine's memory. bin is the plain build: the race detector's shadow
// memory needs terabytes of address space.
func addressSpaceCapped(t *testing.T, bin string, limit int64) string {
	wrapper := filepath.Join(t.TempDir(), "ckptfs-capped")
	script := fmt.Sprintf("#!/bin/sh\nexec prlimit --as=%d -- %s \"$@\"\n", limit, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// The daemon's metrics endpoint.

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

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A MinIO server for the bucket tests, and mounts in front of it.

const (
	minioUser   = "ckptfs-test"
	minioSecret = "ckptfs-test-secret"
	bucket      = "ckpt"
)

// minioServer is a real MinIO server on 127.0.0.1, started by the test
// from the binary 'make minio' builds, on a data folder of its own.
type minioServer struct {
	t    testing.TB
	bin  string
	data string
	addr string
	cmd  *exec.Cmd
}

// startMinio starts MinIO with an empty bucket, and sets the AWS variables
// of this process (which ckptfs inherits) to its credentials. The tests
// that use it are named TestRemote... (BenchmarkRemote...): make test runs
// them apart, once MinIO is built, and the others before.
func startMinio(t testing.TB) *minioServer {
	if name := t.Name(); !strings.HasPrefix(name, "TestRemote") && !strings.HasPrefix(name, "BenchmarkRemote") {
		t.Fatalf("%s starts MinIO: its name must start with TestRemote, which make test runs once MinIO is built", name)
	}
	bin := os.Getenv("CKPTFS_MINIO")
	if bin == "" {
		home, _ := os.UserHomeDir()
		bin = filepath.Join(home, ".cache", "ckptfs", "bin", "minio")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CKPTFS_REQUIRE_MINIO") != "" {
			t.Fatalf("MinIO server %s: %v (make minio builds it)", bin, err)
		}
		t.Skipf("no MinIO server at %s: run make minio", bin)
	}
	s := &minioServer{t: t, bin: bin, data: t.TempDir(), addr: freeAddr(t)}
	s.start()
	t.Cleanup(s.stop)
	// The same for every server, so tests with servers of their own run in
	// parallel (t.Setenv would forbid it); each names its endpoint.
	os.Setenv("AWS_ACCESS_KEY_ID", minioUser)
	os.Setenv("AWS_SECRET_ACCESS_KEY", minioSecret)
	os.Setenv("AWS_REGION", "us-east-1")
	os.Setenv("AWS_MAX_ATTEMPTS", "3") // a dead server fails a request in seconds, not half a minute
	if err := s.client().MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	return s
}

func (s *minioServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "server", s.data, "--address", s.addr, "--console-address", freeAddr(s.t), "--quiet")
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioSecret)
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	// A server that says it is ready may still be initializing its object
	// layer, and answers S3 calls so ("Server not initialized yet"), also
	// after a restart: ready is when a listing goes through.
	for i := 0; i < 300; i++ {
		if resp, err := http.Get("http://" + s.addr + "/minio/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				_, err := s.client().ListBuckets(context.Background())
				if err == nil {
					return
				}
				if !strings.Contains(err.Error(), "not initialized") {
					s.stop()
					s.t.Fatalf("MinIO: %v", err)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	s.t.Fatal("MinIO did not become ready in 30 s")
}

// stop kills the server by its pid, as a crash would.
func (s *minioServer) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

func (s *minioServer) client() *minio.Client {
	c, err := minio.New(s.addr, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioSecret, "")})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// remote are the flags naming the test bucket.
func (s *minioServer) remote() []string {
	return []string{"--remote", "s3://" + bucket + "/team", "--remote-endpoint", "http://" + s.addr}
}

// mountRemote mounts store in front of the test bucket, looking for other
// mounts' checkpoints every second.
func (s *minioServer) mountRemote(t testing.TB, bin, store string, extra ...string) *mount {
	t.Helper()
	return mountStoreWith(t, bin, store, append(append(s.remote(), "--remote-ttl", "1s"), extra...)...)
}
