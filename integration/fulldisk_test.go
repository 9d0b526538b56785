package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/storetest"
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
	first := storetest.Random(1, 30<<20)
	if err := os.WriteFile(m.path("first.bin"), first, 0o644); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(m.path("too-big.bin"), storetest.Random(2, 200<<20), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing past the space: %v, want ENOSPC", err)
	}
	if got, err := os.ReadFile(m.path("first.bin")); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("earlier file after ENOSPC: %v", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	again := storetest.Random(3, 30<<20)
	if err := os.WriteFile(m.path("again.bin"), again, 0o644); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
	if got, err := os.ReadFile(m.path("again.bin")); err != nil || !bytes.Equal(got, again) {
		t.Fatalf("file written after freeing space: %v", err)
	}
	m.unmount()
	fsckClean(t, store)
}

// smallDisk mounts a tmpfs of size MiB with ballast MiB used, for a store.
func smallDisk(t *testing.T, size, ballast int) (dir, ballastPath string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir = filepath.Join(t.TempDir(), "disk")
	os.Mkdir(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	ballastPath = filepath.Join(dir, "ballast")
	if err := os.WriteFile(ballastPath, make([]byte, ballast<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, ballastPath
}

// A write that fails never looks saved: after ENOSPC, a retried fsync and
// the close fail too, and the file keeps its last committed content, for
// a new file streamed in order and for an existing one rewritten through a
// staging file, which stops short of filling the store's disk.
func TestFailedWriteNeverLooksSaved(t *testing.T) {
	disk, _ := smallDisk(t, 256, 80)
	store := filepath.Join(disk, "store")
	m := mountStore(t, store)
	v1 := storetest.Random(1, 8<<20)
	if err := os.WriteFile(m.path("old.bin"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		flag int
		want []byte // content after the failure
	}{
		{"new.bin", os.O_CREATE | os.O_WRONLY, nil},
		{"old.bin", os.O_RDWR, v1}, // rewritten in place: a staging file
	} {
		f, err := os.OpenFile(m.path(tc.name), tc.flag, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		var werr error
		for i := 0; i < 300 && werr == nil; i++ {
			_, werr = f.WriteAt(storetest.Random(int64(10+i), 1<<20), int64(i)<<20) // distinct: no dedup
		}
		if !errors.Is(werr, syscall.ENOSPC) {
			t.Errorf("%s: writes past the space: %v, want ENOSPC", tc.name, werr)
		}
		for i := range 2 {
			if err := f.Sync(); err == nil {
				t.Errorf("%s: fsync %d after a failed write returned success", tc.name, i+1)
			}
		}
		if _, err := f.WriteAt([]byte("more"), 0); err == nil {
			t.Errorf("%s: a write after the failure succeeded", tc.name)
		}
		if err := f.Close(); err == nil {
			t.Errorf("%s: close after a failed write returned success", tc.name)
		}
		got, err := os.ReadFile(m.path(tc.name))
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %d bytes after the failure (%v), want its last committed %d", tc.name, len(got), err, len(tc.want))
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(disk, &st); err != nil || int64(st.Bavail)*st.Bsize < 32<<20 {
			t.Errorf("%s: %d bytes left on the store's disk: the reserve was written into", tc.name, int64(st.Bavail)*st.Bsize)
		}
	}
	m.unmount()
	fsckClean(t, store)
}

// Hot copies give way to the store: on a disk too full for a write, the
// copies are dropped and the write succeeds.
func TestHotCopiesGiveWayToWrites(t *testing.T) {
	disk, _ := smallDisk(t, 256, 0)
	store := filepath.Join(disk, "store")
	if err := os.MkdirAll(filepath.Join(store, "hot"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A hot copy as an earlier mount left it: 150 MiB of the 256.
	if err := os.WriteFile(filepath.Join(store, "hot", "0123456789abcdef"), make([]byte, 150<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	m := mountStore(t, store, "--hot-size=1GiB")
	data := storetest.Random(4, 60<<20) // with the 64 MiB reserve, more than is free
	if err := os.WriteFile(m.path("w.bin"), data, 0o644); err != nil {
		t.Fatalf("a write the hot copy stood in the way of: %v", err)
	}
	if got, err := os.ReadFile(m.path("w.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file read back: %v", err)
	}
	if _, err := os.Stat(filepath.Join(store, "hot", "0123456789abcdef")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the hot copy is still there: %v", err)
	}
	m.unmount()
	fsckClean(t, store)
}
