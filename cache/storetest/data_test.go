package storetest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestRandomIsAFunctionOfItsSeed(t *testing.T) {
	if !bytes.Equal(Random(1, 64), Random(1, 64)) || bytes.Equal(Random(1, 64), Random(2, 64)) {
		t.Fatal("Random is not a function of its seed")
	}
}

func TestTreeBytesCountsRegularFiles(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sub"), 0o755)
	os.WriteFile(filepath.Join(root, "a"), make([]byte, 10), 0o644)
	os.WriteFile(filepath.Join(root, "sub", "b"), make([]byte, 5), 0o644)
	os.Symlink("a", filepath.Join(root, "link"))
	if n := TreeBytes(t, root); n != 15 {
		t.Fatalf("%d bytes, want 15", n)
	}
}
