package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	for d := filepath.Dir(m.dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
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
