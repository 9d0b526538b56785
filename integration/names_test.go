package integration

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// Names of 256 bytes or more are ENAMETOOLONG through the mount, as on
// ext4, so every file in it can be exported to a local disk.
func TestLongNamesAsExt4(t *testing.T) {
	m := mountStore(t, newStore(t))
	local := t.TempDir()
	for _, dir := range []string{m.dir, local} {
		long := dir + "/" + strings.Repeat("n", 256)
		if err := os.WriteFile(long, nil, 0o644); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Fatalf("create of a 256-byte name in %s: %v", dir, err)
		}
		if err := os.WriteFile(long[:len(long)-1], []byte("x"), 0o644); err != nil {
			t.Fatalf("create of a 255-byte name in %s: %v", dir, err)
		}
		if err := os.Rename(long[:len(long)-1], long); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Fatalf("rename to a 256-byte name in %s: %v", dir, err)
		}
	}
}
