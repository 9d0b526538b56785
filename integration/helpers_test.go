// Package integration runs ckptfs end to end: the real binary, a real kernel
// FUSE mount, a real Badger store on disk.
package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The ckptfs binaries built for this run: with the race detector, for
// most tests, and without, for the long randomized ones.
var ckptfsBin, plainBin string

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		fmt.Fprintln(os.Stderr, "integration tests need fusermount3 (apt-get install -y fuse3)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "ckptfs-bin-")
	if err != nil {
		panic(err)
	}
	ckptfsBin, plainBin = filepath.Join(dir, "ckptfs"), filepath.Join(dir, "ckptfs-plain")
	for bin, flags := range map[string][]string{ckptfsBin: {"-race"}, plainBin: nil} {
		args := append(append([]string{"build"}, flags...), "-o", bin, "../cmd/ckptfs")
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build ckptfs: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	if hfGen != nil {
		os.RemoveAll(hfGen.dir) // the checkpoint shared by the tests
	}
	os.Exit(code)
}

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

// fsckClean fails the test unless ckptfs fsck finds no problem in store.
func fsckClean(t testing.TB, store string) {
	t.Helper()
	if out := mustCkptfs(t, store, "fsck"); !strings.Contains(out, " 0 problems") {
		t.Fatalf("fsck: %s", out)
	}
}

// envInt reads a positive count from the environment, else def: how make
// stress lengthens the randomized tests.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// waitExit waits up to a minute for process pid to exit.
func waitExit(pid int) bool {
	for i := 0; i < 6000; i++ {
		if syscall.Kill(pid, 0) != nil {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func (m *mount) cleanup() {
	if isMounted(m.dir) {
		if _, err := ckptfs(m.t, m.store, "umount", m.dir); err != nil {
			m.kill()
		}
	}
	// The daemon is built with -race: a report in its log fails the test.
	if log, _ := os.ReadFile(filepath.Join(m.store, "ckptfs.log")); bytes.Contains(log, []byte("DATA RACE")) {
		m.t.Errorf("data race in the daemon:\n%s", log)
	}
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return bytes.Contains(b, []byte(" "+dir+" "))
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

// waitFor polls cond until it holds, for up to limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
	}
}
