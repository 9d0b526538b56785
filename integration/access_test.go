package integration

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

// asNobody runs a command as uid/gid 65534 and returns its error.
func asNobody(name string, args ...string) (string, error) {
	out, err := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", name}, args...)...).CombinedOutput()
	return string(out), err
}

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

// openToAll lets every user search dir and the folders above it, up to
// the temporary folder: test temp dirs are 0700, and a path below one
// would make every other-user test pass vacuously.
func openToAll(dir string) {
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
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
