package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// A store on a small file system: writes past its space fail with ENOSPC
// (not a crashed daemon), files written before stay intact, and once space
// is freed writing works again.
func TestFullStoreDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	disk := filepath.Join(t.TempDir(), "disk")
	os.Mkdir(disk, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", disk).Run()
	ballast := filepath.Join(disk, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 80<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(disk, "store")
	m := mountStore(t, store)
	first := randomData(1, 30<<20)
	if err := os.WriteFile(m.path("first.bin"), first, 0o644); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(m.path("too-big.bin"), randomData(2, 200<<20), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing past the space: %v, want ENOSPC", err)
	}
	if got, err := os.ReadFile(m.path("first.bin")); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("earlier file after ENOSPC: %v", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	again := randomData(3, 30<<20)
	if err := os.WriteFile(m.path("again.bin"), again, 0o644); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
	if got, err := os.ReadFile(m.path("again.bin")); err != nil || !bytes.Equal(got, again) {
		t.Fatalf("file written after freeing space: %v", err)
	}
	m.unmount()
	fsckClean(t, store)
}
