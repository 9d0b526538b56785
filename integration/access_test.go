package integration

// Other users: what another uid may reach through the mount, its views and
// the CLI's commands that run in the root daemon.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestAccessIsPrivateUnlessAllowOther(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to another user")
	}
	store := newStore(t)
	m := mountStore(t, store)
	// Let the other user reach the mountpoint: test temp dirs are 0700.
	openToAll(filepath.Dir(m.dir))
	if out, err := asNobody("ls", filepath.Dir(m.dir)); err != nil {
		t.Fatalf("the other user cannot reach the mountpoint's folder: %s", out)
	}
	if err := os.WriteFile(m.path("public.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("private.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(m.path("private.txt")); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v not kept", st.Mode())
	}
	if st, err := os.Stat(store); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("store directory mode %v (%v)", st.Mode(), err)
	}
	if out, err := asNobody("cat", m.path("public.txt")); err == nil {
		t.Fatalf("another user read a mount without --allow-other: %s", out)
	}
	m.unmount()
	if err := os.Mkdir(m.dir, 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	mustCkptfs(t, store, "mount", "--allow-other", m.dir)
	if out, err := asNobody("cat", m.path("public.txt")); err != nil {
		t.Fatalf("--allow-other: %v %s", err, out)
	}
	// default_permissions: modes are enforced by the kernel.
	if out, err := asNobody("cat", m.path("private.txt")); err == nil {
		t.Fatalf("another user read a 0600 file: %s", out)
	}
	if out, err := asNobody("touch", m.path("new.txt")); err == nil {
		t.Fatalf("another user created a file in a 0755 root-owned folder: %s", out)
	}
}

// TestViewsAreAsPrivateAsTheirSource reads views as another user with
// --allow-other: a view of a private folder, or of private weights, must
// refuse them, while the same layout made public serves them (the control
// that shows the other user can reach the mount at all).
func TestViewsAreAsPrivateAsTheirSource(t *testing.T) {
	m := sharedMount(t)
	weights := []genTensor{{name: "w", dtype: "F32", shape: []int{4}, data: make([]byte, 16)}}
	folder := func(name string, dirMode, weightMode os.FileMode, uid int) {
		t.Helper()
		dir := m.path(name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeSafetensors(t, filepath.Join(dir, "model.safetensors"), weights)
		os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
		for _, p := range []string{filepath.Join(dir, "model.safetensors"), filepath.Join(dir, "config.json"), dir} {
			if err := os.Chown(p, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
		os.Chmod(filepath.Join(dir, "model.safetensors"), weightMode)
		os.Chmod(dir, dirMode)
	}
	folder("public", 0o755, 0o644, 0)
	folder("privdir", 0o700, 0o644, 0)
	folder("privweights", 0o755, 0o600, 0)
	folder("theirs", 0o700, 0o600, 65534)

	readable := func(p string) error { _, err := asNobody("cat", p); return err }
	// Control: the other user reads a public view, so the refusals below
	// are the views' modes, not an unreachable mount.
	for _, p := range []string{"public@single/model.safetensors", "public@shards/model.safetensors.index.json", "public@single/config.json", "theirs@single/model.safetensors"} {
		if err := readable(m.path(p)); err != nil {
			t.Fatalf("control: the other user cannot read %s: %v", p, err)
		}
	}
	for _, p := range []string{"privdir@single/model.safetensors", "privdir@single/config.json", "privdir@shards=1KB/model.safetensors.index.json",
		"privweights@single/model.safetensors", "privweights@shards/model-00001-of-00001.safetensors", "privweights@shards/model.safetensors.index.json"} {
		if err := readable(m.path(p)); err == nil {
			t.Errorf("the other user read %s", p)
		}
	}
	// Non-weight files keep their own modes: config.json is 0644.
	if err := readable(m.path("privweights@single/config.json")); err != nil {
		t.Errorf("a public config.json in a view of private weights: %v", err)
	}
	st, err := os.Stat(m.path("privdir@single"))
	if err != nil || st.Mode().Perm() != 0o500 {
		t.Errorf("view of a 0700 folder: %v %v, want dr-x------", st.Mode(), err)
	}
	st, err = os.Stat(m.path("theirs@single/model.safetensors"))
	if err != nil || st.Mode().Perm() != 0o400 || st.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Errorf("view file of 65534's 0600 weights: %v %+v %v", st.Mode(), st.Sys(), err)
	}
}

// A view of a DCP checkpoint reads its .metadata and every .distcp file:
// the other user reads it only when all of them allow it.
func TestDCPViewsAreAsPrivateAsTheirFiles(t *testing.T) {
	m := sharedMount(t)
	folder := func(name, private string) {
		t.Helper()
		run(t, "cp", "-r", "../layout/dcp/testdata/2ranks", m.path(name))
		// The reference file would be the folder's weights: safetensors come first.
		os.Remove(m.path(name, "reference.safetensors"))
		if private != "" {
			os.Chmod(m.path(name, private), 0o600)
		}
	}
	folder("public", "")
	folder("privrank", "__1_0.distcp")
	folder("privmeta", ".metadata")
	readable := func(p string) error { _, err := asNobody("cat", m.path(p)); return err }
	// Control: the other user reads the public view, and it is the
	// checkpoint's model tensors.
	if err := readable("public@single/model.safetensors"); err != nil {
		t.Fatalf("control: the other user cannot read the public view: %v", err)
	}
	got, err := os.ReadFile(m.path("public@single/model.safetensors"))
	if err != nil || !bytes.Contains(got, []byte(`"layer.0.weight":{"dtype":"BF16"`)) {
		t.Fatalf("public view: %v %.200q", err, got)
	}
	for _, p := range []string{"privrank@single/model.safetensors", "privrank@shards=100/model.safetensors.index.json", "privmeta@single/model.safetensors"} {
		if err := readable(p); err == nil {
			t.Errorf("the other user read %s", p)
		}
	}
}

// weightsFolder makes folder name with one safetensors file per tensor
// name, each holding that tensor, for the privacy tests.
func weightsFolder(t *testing.T, m *mount, name string, mode os.FileMode, tensors ...string) {
	t.Helper()
	if err := os.Mkdir(m.path(name), mode); err != nil {
		t.Fatal(err)
	}
	for _, x := range tensors {
		writeSafetensors(t, m.path(name, x+".safetensors"), []genTensor{{name: x, dtype: "F32", shape: []int{4}, data: make([]byte, 16)}})
	}
}

// A view file draws from every weight file, so a user one source denies
// must not read it through the view: not even where the sources' groups
// differ and the view's group is root's. a.safetensors is 0604 in uid
// 65534's group, which denies it; b.safetensors 0644 in root's. Control:
// the same folder with a.safetensors 0644 serves the user.
func TestViewOfSourcesInTwoGroups(t *testing.T) {
	m := sharedMount(t)
	for name, modeA := range map[string]os.FileMode{"open": 0o644, "denied": 0o604} {
		weightsFolder(t, m, name, 0o755, "a", "b")
		for _, f := range []struct {
			file string
			gid  int
			mode os.FileMode
		}{{"a", 65534, modeA}, {"b", 0, 0o644}} {
			p := m.path(name, f.file+".safetensors")
			if err := os.Chown(p, 0, f.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, f.mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	readable := func(p string) error { _, err := asNobody("cat", m.path(p)); return err }
	for _, p := range []string{"open@single/model.safetensors", "open@shards=20/model-00002-of-00002.safetensors", "open@shards=20/model.safetensors.index.json"} {
		if err := readable(p); err != nil {
			t.Fatalf("control: the other user cannot read %s: %v", p, err)
		}
	}
	if readable("denied/a.safetensors") == nil {
		t.Fatal("the other user reads the 0604 source of its own group: the test would prove nothing")
	}
	for _, p := range []string{"denied@single/model.safetensors", "denied@shards=20/model-00002-of-00002.safetensors", "denied@shards=20/model.safetensors.index.json"} {
		if err := readable(p); err == nil {
			t.Errorf("the other user read %s", p)
		}
	}
}

// viewHolder runs a process as uid 65534 that holds directory dir open and
// opens and reads file in it each time ask is called; ask returns "ok" or
// the error it met.
func viewHolder(t *testing.T, dir, file string) (ask func() string) {
	t.Helper()
	const script = `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
for _ in sys.stdin:
    try:
        f = os.open(sys.argv[2], os.O_RDONLY, dir_fd=fd)
        os.read(f, 16)
        os.close(f)
        print("ok", flush=True)
    except OSError as e:
        print(e.strerror, flush=True)
`
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script, dir, file)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(stdout)
	return func() string {
		t.Helper()
		answer := make(chan string, 1)
		go func() {
			fmt.Fprintln(stdin)
			if !lines.Scan() {
				answer <- fmt.Sprintf("holder ended: %v", lines.Err())
				return
			}
			answer <- lines.Text()
		}()
		select {
		case a := <-answer:
			return a
		case <-time.After(time.Minute):
			t.Fatalf("no answer from the process holding %s", dir)
			return ""
		}
	}
}

// A process that holds DIR@single open gets what the sources allow now,
// not what the view was planned with: after chmod 0600 of the weights, at
// once (the kernel still caches the file's attributes) and past the
// kernel's caches. Control: after chmod 0604, which still lets others
// read, the same process reads on.
func TestHeldViewFollowsChmod(t *testing.T) {
	m := sharedMount(t)
	weightsFolder(t, m, "shut", 0o755, "model")
	weightsFolder(t, m, "still", 0o755, "model")
	shut := viewHolder(t, m.path("shut@single"), "model.safetensors")
	still := viewHolder(t, m.path("still@single"), "model.safetensors")
	for name, ask := range map[string]func() string{"shut": shut, "still": still} {
		if got := ask(); got != "ok" {
			t.Fatalf("control: the other user cannot read %s@single/model.safetensors through the folder it holds: %s", name, got)
		}
	}
	os.Chmod(m.path("shut", "model.safetensors"), 0o600)
	os.Chmod(m.path("still", "model.safetensors"), 0o604)
	for _, wait := range []time.Duration{0, 1500 * time.Millisecond} {
		time.Sleep(wait)
		if got := shut(); got == "ok" {
			t.Errorf("%v after chmod 0600 of the weights, the held view still serves them", wait)
		}
		if got := still(); got != "ok" {
			t.Errorf("control: %v after chmod 0604, the held view refuses: %s", wait, got)
		}
	}
}

// A lookup of DIR@single plans DIR's views: it settles DIR's staged files
// and reads every weight file's header. A user who may not search DIR must
// not make that happen to the owner's files. A malformed weight file shows
// a plan: the plan leaves it out with a warning naming it. Control: the
// same folder, searchable, is planned for the same user.
func TestViewLookupNeedsSearchOfTheFolder(t *testing.T) {
	m := sharedMount(t)
	for name, mode := range map[string]os.FileMode{"shut": 0o700, "open": 0o755} {
		weightsFolder(t, m, name, mode, "a")
		if err := os.WriteFile(m.path(name, "b.safetensors"), []byte("not safetensors"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := asNobody("stat", m.path("open@single")); err != nil {
		t.Fatalf("control: the other user cannot look up open@single: %v %s", err, out)
	}
	if out, err := asNobody("stat", m.path("shut@single")); err == nil {
		t.Errorf("the other user looked up a view of a 0700 folder: %s", out)
	}
	planned := func(dir string) bool {
		log, _ := os.ReadFile(filepath.Join(m.store, "ckptfs.log"))
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, "view of "+dir+`"`) && strings.Contains(line, "b.safetensors:") && strings.Contains(line, "left out") {
				return true
			}
		}
		return false
	}
	if !planned("/open") {
		t.Fatal("control: the searchable folder's plan did not show in the log")
	}
	if planned("/shut") {
		t.Error("a user who may not search the folder made the daemon plan its views")
	}
}

// The CLI's rm and export run in the mount's daemon, as root, on paths
// other users may change while they run. These tests have uid 65534 swap
// a folder for a symlink to a folder of root's, outside the mount, as
// fast as it can, while root runs the command: nothing outside may be
// removed or created. Each has a control: root doing the same by path,
// as the daemon did, is led outside within a few tries, so the swaps do
// land where they should.

// asNobodyLoop runs a Python loop as uid 65534 in the background, for the
// test's duration.
func asNobodyLoop(t *testing.T, script string, args ...string) {
	t.Helper()
	cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", "print('looping', flush=True)\n" + script}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Under make test's load, python takes seconds to start: the tries
	// below are meant against a running loop, the controls' too.
	started := make(chan error, 1)
	go func() {
		_, err := bufio.NewReader(out).ReadString('\n')
		started <- err
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("uid 65534's loop did not start: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("uid 65534's loop did not start within a minute")
	}
}

// flipScript puts a folder and a symlink in turn at one name, over and
// over (the mount has no RENAME_EXCHANGE).
const flipScript = `
import os, sys
name, folder, link = sys.argv[1:]
while True:
    for src, dst in ((name, folder), (link, name), (name, link), (folder, name)):
        try:
            os.rename(src, dst)
        except OSError:
            pass
`

// TestRmThroughAFlippingSymlink: uid 65534 owns u, holding a folder a with
// b0, b1... in it and a symlink l to root's folder outside, which holds
// the same names; it puts one and the other at u/a without pause while
// root runs 'ckptfs rm u/a/bN' against the live mount, 100 times.
func TestRmThroughAFlippingSymlink(t *testing.T) {
	const tries = 100
	m := sharedMount(t)
	outside := t.TempDir()
	u := m.path("u")
	if err := os.Mkdir(u, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(u, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 2 * tries {
		names = append(names, fmt.Sprintf("%s/a/b%d", u, i))
		if err := os.Mkdir(filepath.Join(outside, fmt.Sprint("b", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := asNobody("mkdir", append([]string{"-p"}, names...)...); err != nil {
		t.Fatalf("the other user cannot make its folders: %v %s", err, out)
	}
	if out, err := asNobody("ln", "-s", outside, filepath.Join(u, "l")); err != nil {
		t.Fatalf("the other user cannot make its symlink: %v %s", err, out)
	}
	asNobodyLoop(t, flipScript, filepath.Join(u, "a"), filepath.Join(u, "d"), filepath.Join(u, "l"))
	removedOutside := func() []string {
		var gone []string
		for i := range 2 * tries {
			if _, err := os.Lstat(filepath.Join(outside, fmt.Sprint("b", i))); err != nil {
				gone = append(gone, fmt.Sprint("b", i))
			}
		}
		return gone
	}
	// Control: root removing by path, as the daemon did after its check in
	// the store, is led outside.
	led := false
	for i := 0; i < tries && !led; i++ {
		os.RemoveAll(filepath.Join(u, "a", fmt.Sprint("b", i)))
		led = len(removedOutside()) > 0
	}
	if !led {
		t.Fatalf("control: %d removals by path through the flipping folder never reached outside", tries)
	}
	for _, name := range removedOutside() {
		os.Mkdir(filepath.Join(outside, name), 0o755)
	}
	removed := 0
	for i := tries; i < 2*tries; i++ {
		if _, err := ckptfs(t, m.store, "rm", fmt.Sprintf("u/a/b%d", i)); err == nil {
			removed++
		}
		if gone := removedOutside(); len(gone) > 0 {
			t.Fatalf("'ckptfs rm' removed %s outside the mount (try %d)", gone, i-tries+1)
		}
	}
	t.Logf("%d of %d removals done, the rest refused", removed, tries)
	// Control: with the folder left in place, rm removes what it is
	// asked to.
	if err := os.MkdirAll(m.path("v", "a", "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustCkptfs(t, m.store, "rm", "v/a/b")
	if _, err := os.Lstat(m.path("v", "a", "b")); !os.IsNotExist(err) {
		t.Fatalf("control: v/a/b still there after rm: %v", err)
	}
}

// exportSwapScript waits for w/out0, w/out1... to appear in turn, and
// as soon as one does renames it aside and puts a symlink to root's
// folder outside in its place.
const exportSwapScript = `
import os, sys
w, outside = sys.argv[1], sys.argv[2]
i = 0
while True:
    dst = "%s/out%d" % (w, i)
    try:
        os.rename(dst, dst + ".moved")
    except OSError:
        continue
    try:
        os.symlink(outside, dst)
    except OSError:
        pass
    i += 1
`

// TestExportIntoAFolderAnotherUserWrites: root exports a checkpoint of 40
// files (12 MB) into w/outN, w a folder of uid 65534's, which swaps each
// outN for a symlink to root's folder outside as soon as it appears, 20
// times.
func TestExportIntoAFolderAnotherUserWrites(t *testing.T) {
	const tries = 20
	m := sharedMount(t)
	for i := range 40 {
		p := m.path("ck", fmt.Sprint("f", i))
		if i%10 == 9 {
			p = m.path("ck", "sub", fmt.Sprint("f", i))
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(strings.Repeat(fmt.Sprint(i), 150_000)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside, w := t.TempDir(), filepath.Join(t.TempDir(), "w")
	openToAll(filepath.Dir(w))
	if err := os.Mkdir(w, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(w, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	// Control: an export into a folder no one else writes is whole.
	quiet := filepath.Join(t.TempDir(), "quiet")
	mustCkptfs(t, m.store, "export", "ck", quiet)
	sameTrees(t, m.path("ck"), quiet)

	asNobodyLoop(t, exportSwapScript, w, outside)
	madeOutside := func() []string { return strings.Fields(listNames(t, outside)) }
	// Control: root making the same tree by path, as export did, is led
	// outside.
	next := 0
	for led := false; !led; next++ {
		if next == tries {
			t.Fatalf("control: %d copies by path into the swapped folders never reached outside", tries)
		}
		dst := filepath.Join(w, fmt.Sprint("out", next))
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range 40 {
			os.WriteFile(filepath.Join(dst, fmt.Sprint("f", j)), nil, 0o644)
		}
		led = len(madeOutside()) > 0
	}
	for _, name := range madeOutside() {
		os.Remove(filepath.Join(outside, name))
	}
	exported := 0
	for range tries {
		out, err := ckptfs(t, m.store, "export", "ck", filepath.Join(w, fmt.Sprint("out", next)))
		if made := madeOutside(); len(made) > 0 {
			t.Fatalf("'ckptfs export' made %s outside its destination (out%d: %v %s)", made, next, err, out)
		}
		if err == nil {
			exported++
			// The swapper renames every outN in turn, but an export may
			// finish before it gets there: wait for the rename.
			moved := filepath.Join(w, fmt.Sprint("out", next, ".moved"))
			waitFor(t, moved, time.Minute, func() bool { _, err := os.Lstat(moved); return err == nil })
			sameTrees(t, m.path("ck"), moved)
		} else {
			t.Logf("out%d: %v %s", next, err, out)
			// The swapper waits for outN before it looks for outN+1: an
			// export refused before it made its folder must not stall it.
			dst := filepath.Join(w, fmt.Sprint("out", next))
			if _, err := os.Lstat(dst); os.IsNotExist(err) {
				os.Mkdir(dst, 0o755)
			}
		}
		next++
	}
	t.Logf("%d of %d exports done, the rest refused", exported, tries)
}
