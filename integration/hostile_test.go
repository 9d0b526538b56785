package integration

// Hostile input: malformed and adversarial weight files, indexes, pickles
// and DCP metadata; each is stored as written, refused or bounded in its
// views, and the mount stays up.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/view"
)

// stFile builds a safetensors file from a literal header and a data length.
func stFile(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

func withLength(b []byte, n uint64) []byte {
	binary.LittleEndian.PutUint64(b, n)
	return b
}

// malformedSafetensors are files a loader must never see in a view.
func malformedSafetensors() map[string][]byte {
	ok := `"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`
	good := stFile("{"+ok+"}", 8)
	bigHeader := withLength(make([]byte, 8), 17<<20)
	bigHeader = append(bigHeader, []byte("{}")...)
	bigHeader = append(bigHeader, []byte(strings.Repeat(" ", 17<<20-2))...)
	return map[string][]byte{
		"empty":                {},
		"length prefix only":   good[:8],
		"zero length":          withLength(append([]byte{}, good...), 0),
		"truncated header":     good[:20],
		"truncated data":       good[:len(good)-3],
		"length beyond file":   withLength(append([]byte{}, good...), 4096),
		"declared 200 MiB":     withLength(append([]byte{}, good...), 200<<20),
		"17 MiB header":        bigHeader,
		"invalid utf-8":        stFile("{\"\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
		"invalid json":         stFile(`{"x":{"dtype":"F32",`, 8),
		"not an object":        stFile(`[1,2,3]`, 0),
		"overlapping offsets":  stFile(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, 8),
		"gapped offsets":       stFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, 8),
		"shape dtype mismatch": stFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8),
		"duplicate names":      stFile("{"+ok+","+ok+"}", 8),
		"unknown dtype":        stFile(`{"a":{"dtype":"F24","shape":[2],"data_offsets":[0,6]}}`, 6),
		"negative dimension":   stFile(`{"a":{"dtype":"U8","shape":[-8],"data_offsets":[0,8]}}`, 8),
		"negative offset":      stFile(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[-8,0]}}`, 8),
		"three offsets":        stFile(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,4,8]}}`, 8),
		"missing dtype":        stFile(`{"a":{"shape":[8],"data_offsets":[0,8]}}`, 8),
		"metadata not strings": stFile(`{"__metadata__":{"format":1},`+ok+`}`, 8),
		"trailing data":        stFile("{"+ok+"}", 12),
		"offsets beyond file":  stFile(`{"a":{"dtype":"U8","shape":[64],"data_offsets":[0,64]}}`, 8),
		"shape overflow":       stFile(`{"a":{"dtype":"F64","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`, 8),
	}
}

// Every malformed file round-trips byte-identical as written and is left out
// of its folder's views with a warning naming it, while the good file beside
// it is served.
func TestMalformedInputs(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	good := stFile(`{"__metadata__":{"format":"pt"},"good.w":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}`, 8)
	local := t.TempDir()
	cases := malformedSafetensors()
	if len(cases) < 20 {
		t.Fatalf("only %d kinds", len(cases))
	}
	i := 0
	for name, data := range cases {
		dir := m.path("bad" + string(rune('a'+i)))
		i++
		os.Mkdir(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, "a-good.safetensors"), good, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "b-bad.safetensors"), data, 0o644); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		os.WriteFile(filepath.Join(local, "x"), data, 0o644)
		run(t, "cmp", filepath.Join(local, "x"), filepath.Join(dir, "b-bad.safetensors"))
		got := readSafetensors(t, dir+"@single/model.safetensors")
		if len(got) != 1 || got["good.w"] == nil {
			t.Fatalf("%s: view holds %d tensors", name, len(got))
		}
	}
	log, _ := os.ReadFile(filepath.Join(store, "ckptfs.log"))
	if n := strings.Count(string(log), "b-bad.safetensors"); n < len(cases) {
		t.Fatalf("%d warnings name the bad files, want %d", n, len(cases))
	}
}

// index.json contents are never trusted as paths, missing shards are
// skipped, and a tensor two shards define is left out.
func TestMalformedIndexes(t *testing.T) {
	m := mountStore(t, newStore(t))
	tensor := func(name string) []byte {
		return stFile(`{"`+name+`":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, 8)
	}
	write := func(p string, data []byte) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	index := func(wm map[string]string) []byte {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 8}, "weight_map": wm})
		return b
	}
	// A checkpoint outside the folder that a hostile index points at.
	write(m.path("outside", "secret.safetensors"), tensor("secret"))
	for _, target := range []string{"../outside/secret.safetensors", "/etc/passwd", "sub/x.safetensors"} {
		dir := m.path("escape-" + strings.NewReplacer("/", "_", ".", "_").Replace(target))
		write(filepath.Join(dir, "model-1.safetensors"), tensor("own"))
		write(filepath.Join(dir, "model.safetensors.index.json"), index(map[string]string{"own": "model-1.safetensors", "secret": target}))
		got := readSafetensors(t, dir+"@single/model.safetensors")
		if len(got) != 1 || got["own"] == nil {
			t.Fatalf("index naming %s: view holds %v", target, len(got))
		}
	}
	dir := m.path("missing")
	write(filepath.Join(dir, "model-1.safetensors"), tensor("one"))
	write(filepath.Join(dir, "model.safetensors.index.json"), index(map[string]string{"one": "model-1.safetensors", "two": "model-2.safetensors"}))
	if got := readSafetensors(t, dir+"@single/model.safetensors"); len(got) != 1 || got["one"] == nil {
		t.Fatalf("missing shard: view holds %d tensors", len(got))
	}
	dir = m.path("twice")
	write(filepath.Join(dir, "model-1.safetensors"), tensor("t"))
	write(filepath.Join(dir, "model-2.safetensors"), stFile(`{"t":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},`+
		`"u":{"dtype":"U8","shape":[8],"data_offsets":[8,16]}}`, 16))
	write(filepath.Join(dir, "model.safetensors.index.json"), index(map[string]string{"t": "model-1.safetensors", "u": "model-2.safetensors"}))
	// The index names one, but two files define t: neither one's bytes
	// are served as t.
	if got := readSafetensors(t, dir+"@shards/model-00001-of-00001.safetensors"); len(got) != 1 || got["u"] == nil {
		t.Fatalf("tensor in two shards: view holds %d tensors", len(got))
	}
}

// TestTorchBinRefused: a pickle that would run os.system, and a legacy
// (pre-zip) torch.save file, are stored and read back byte for byte and
// given no view; the refusal names the global.
func TestTorchBinRefused(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	for dir, fixture := range map[string]string{"evil": "malicious.bin", "old": "legacy.bin"} {
		run(t, "mkdir", m.path(dir))
		run(t, "cp", torchFixture(fixture), m.path(dir, "pytorch_model.bin"))
		run(t, "cmp", torchFixture(fixture), m.path(dir, "pytorch_model.bin"))
		if _, err := os.Stat(m.path(dir + "@single")); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s@single: %v, want ENOENT", dir, err)
		}
	}
	if _, err := os.Stat("/tmp/ckptfs-pwned"); err == nil {
		t.Fatal("the pickle's command ran")
	}
	if log := string(mustRead(t, filepath.Join(store, "ckptfs.log"))); !strings.Contains(log, "posix.system refused") {
		t.Errorf("daemon log does not name the refused global:\n%s", log)
	}
	m.unmount()
	fsckClean(t, store)
}

// TestHostileWeightsLeaveTheMountUp writes the inputs that used to take the
// daemon down or hold it for minutes, each in a folder of its own beside a
// good checkpoint: a .bin whose pickle nests 800,000 tuples in a dict key
// (a Go stack overflow, ENOTCONN for every user), a 300,000-key pickle,
// and 5 MB of __metadata__ over 2,000 tiny tensors viewed at @shards=1.
// Each is stored byte-identical; its views are refused or leave it out with
// a warning naming the file and the limit; the good folder still serves.
func TestHostileWeightsLeaveTheMountUp(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	files := map[string][]byte{
		"deep/pytorch_model.bin": layouttest.TorchZip(layouttest.DeepKeyPickle(800_000), nil),
		"wide/pytorch_model.bin": layouttest.TorchZip(layouttest.WideDictPickle(300_000), nil),
		"dup/pytorch_model.bin":  layouttest.TorchZip(layouttest.DupPickle(8<<20), nil),
		"meta/model.safetensors": layouttest.TinyTensorsHeader(2000, 5<<20),
		"good/model.safetensors": stFile(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8),
	}
	for name, data := range files {
		os.MkdirAll(filepath.Dir(m.path(name)), 0o755)
		if err := os.WriteFile(m.path(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Views are absent or empty: every hostile tensor table is left out.
	// The time each takes and the daemon's peak memory are logged for the
	// README's table, not asserted.
	for _, view := range []string{"deep@single", "wide@single", "dup@single", "meta@shards=1", "meta@single"} {
		start := time.Now()
		entries, _ := os.ReadDir(m.path(view))
		t.Logf("%s: listed in %v", view, time.Since(start).Round(time.Millisecond))
		for _, e := range entries {
			if st, err := os.Stat(m.path(view, e.Name())); err != nil || st.Size() > 4096 {
				t.Errorf("%s/%s: %v %v", view, e.Name(), st.Size(), err)
			}
		}
	}
	for name, data := range files {
		got, err := os.ReadFile(m.path(name))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s as written: %d bytes, %v", name, len(got), err)
		}
	}
	if _, err := os.ReadFile(m.path("good@single", "model.safetensors")); err != nil {
		t.Fatalf("the good folder's view after the hostile ones: %v", err)
	}
	t.Logf("daemon peak RSS: %s", daemonPeakRSS(m.pid()))
	log, _ := os.ReadFile(filepath.Join(m.store, "ckptfs.log"))
	for _, want := range []string{"view of /deep", "key 0 is a tuple", "view of /dup", "over the reader's limit", "view of /meta", "model.safetensors: __metadata__ of 5242"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("the log does not say %q", want)
		}
	}
}

// daemonPeakRSS is the daemon's VmHWM line, for the log.
func daemonPeakRSS(pid int) string {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM") {
			return strings.Join(strings.Fields(line)[1:], " ")
		}
	}
	return "?"
}

// logLines returns the lines of the daemon's log that hold every one of
// words.
func logLines(t *testing.T, store string, words ...string) []string {
	t.Helper()
	log, _ := os.ReadFile(filepath.Join(store, "ckptfs.log"))
	var out []string
	for _, line := range strings.Split(string(log), "\n") {
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(line, w) }) {
			out = append(out, line)
		}
	}
	return out
}

// expertsFile is a safetensors file of n one-byte tensors named as a
// mixture of experts' weights are: some 95 header bytes a tensor.
func expertsFile(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"__metadata__":{"format":"pt"}`)
	for i := range n {
		fmt.Fprintf(&b, `,"model.layers.%d.mlp.experts.%d.down_proj.weight":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}`, i/256, i%256, i, i+1)
	}
	b.WriteString("}")
	return stFile(b.String(), n)
}

// TestViewPlanHasOneBudgetForTheFolder: a view's plan pays once for the
// folder's bytes, however many names lead to them, and logs a summary.
// 20 hard links to one file with a 3.4 MB header define each of its
// 36,000 names 20 times: the view is refused, its plan reads the header
// once and logs 20 warnings and a count of the rest. Two plain files that
// both define w give a view without w. Lookups of one view under 8 names
// at once, and of 8 other specs of the folder, read it once. The daemon
// is built without the race detector, for the times it logs
// (fs.TestOnePlanAtATime runs the same lookups under it).
func TestViewPlanHasOneBudgetForTheFolder(t *testing.T) {
	m := mountStoreWith(t, plainBin, newStore(t), "--log-level", "debug")
	big := expertsFile(36_000)
	os.Mkdir(m.path("links"), 0o755)
	if err := os.WriteFile(m.path("links", "link00.safetensors"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 20; i++ {
		if err := os.Link(m.path("links", "link00.safetensors"), m.path("links", fmt.Sprintf("link%02d.safetensors", i))); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, err := os.Stat(m.path("links@single")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("links@single: %v, want ENOENT: every name is defined 20 times", err)
	}
	t.Logf("20 links to a %d-byte header: refused in %v; daemon peak RSS %s",
		binary.LittleEndian.Uint64(big), time.Since(start).Round(time.Millisecond), daemonPeakRSS(m.pid()))
	if lines := logLines(t, m.store, "/links"); len(lines) > view.MaxWarnings+3 {
		t.Fatalf("%d log lines for the links", len(lines))
	}
	if len(logLines(t, m.store, "view of /links", "more like these")) != 1 {
		t.Fatalf("no line counts the warnings left out: %q", logLines(t, m.store, "/links"))
	}
	planned := logLines(t, m.store, "views planned", "dir=/links")
	if len(planned) != 1 || !strings.Contains(planned[0], fmt.Sprintf("spent=\"%d header bytes", 8+binary.LittleEndian.Uint64(big))) {
		t.Fatalf("the header of 20 links read other than once: %q", planned)
	}

	// Plain twins, and the folder's lookups. A file of 4,000 tensors makes
	// planning take long enough that the lookups overlap.
	os.Mkdir(m.path("twins"), 0o755)
	for name, header := range map[string]string{
		"a.safetensors": `{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"own.a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`,
		"b.safetensors": `{"own.b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`,
	} {
		if err := os.WriteFile(m.path("twins", name), stFile(header, 6), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(m.path("twins", "c.safetensors"), expertsFile(4_000), 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	sameSpec := []string{"1GB", "1000MB", "1000000KB", "1000000000", "1000000000B", "0.001TB", "1gb", "1000mb"}
	for i, size := range sameSpec {
		for _, name := range []string{"twins@shards=" + size, fmt.Sprintf("twins@shards=%d", 1000+i)} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := os.Stat(m.path(name, "model.safetensors.index.json")); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}()
		}
	}
	wg.Wait()
	got := readSafetensors(t, m.path("twins@single", "model.safetensors"))
	if got["w"] != nil || got["own.a"] == nil || got["own.b"] == nil || len(got) != 2+4_000 {
		t.Fatalf("twins@single serves %d tensors, w %v", len(got), got["w"])
	}
	if lines := logLines(t, m.store, "view of /twins", `\"w\": defined by a.safetensors and b.safetensors`); len(lines) != 1 {
		t.Fatalf("%d warnings about w, want one", len(lines))
	}
	if lines := logLines(t, m.store, "views planned", "dir=/twins"); len(lines) != 1 {
		t.Fatalf("the folder was read %d times for 10 specs under 17 names", len(lines))
	}
}

// TestHostileDCPMetadataFromAnotherUser: uid 65534 writes a DCP folder
// whose .metadata joins one memoized tuple of 50,000 references to a 1 MiB
// string with pathlib.PosixPath (50 GiB asked for by a 1.1 MB file), then
// looks up its @single view. The view is refused with a warning naming the
// file and the limit; the daemon stays up and serves root. Its address
// space is capped at 8 GiB, so that a reader that builds the path fails
// the test at once instead of taking the machine's memory. Control: the
// same user writes a sound DCP folder and reads its view.
func TestHostileDCPMetadataFromAnotherUser(t *testing.T) {
	m := sharedMountWith(t, addressSpaceCapped(t, plainBin, 8<<30))
	nobodysFolder(t, m)
	src := t.TempDir()
	openToAll(src)
	run(t, "cp", "-r", "../layout/dcp/testdata/2ranks", filepath.Join(src, "good"))
	os.Remove(filepath.Join(src, "good", "reference.safetensors")) // else the folder's weights
	hostile := layouttest.PosixPathAgainPickle(1<<20, 50_000, 1)
	if err := os.Mkdir(filepath.Join(src, "evil"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "evil", ".metadata"), hostile, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "cp", filepath.Join(src, "good", "__0_0.distcp"), filepath.Join(src, "evil"))
	run(t, "chmod", "-R", "a+rX", src)
	for _, name := range []string{"good", "evil"} {
		if out, err := asNobody("cp", "-r", filepath.Join(src, name), m.path("u", name)); err != nil {
			t.Fatalf("the other user cannot write %s into the mount: %v %s", name, err, out)
		}
	}
	readGood := func(when string) {
		t.Helper()
		if out, err := asNobody("cat", m.path("u/good@single/model.safetensors")); err != nil {
			t.Fatalf("control, %s: the other user cannot read the sound folder's view: %v %.200s", when, err, out)
		}
	}
	readGood("before")
	if out, err := asNobody("ls", m.path("u/evil@single")); err == nil {
		t.Errorf("the hostile folder has a view: %s", out)
	}
	if _, err := os.ReadDir(m.dir); err != nil {
		t.Fatalf("the mount is down after the hostile lookup: %v", err)
	}
	if got, err := os.ReadFile(m.path("u/evil/.metadata")); err != nil || !bytes.Equal(got, hostile) {
		t.Fatalf("root reads the hostile .metadata back: %d bytes, %v", len(got), err)
	}
	readGood("after")
	log, _ := os.ReadFile(filepath.Join(m.store, "ckptfs.log"))
	for _, want := range []string{"dir=u/evil", "reason=\".metadata: ", "path of more than 4096 bytes"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("the log does not say %q", want)
		}
	}
}
