package storetest

import (
	"errors"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// Random is n bytes from a seeded generator: the same seed, the same bytes.
func Random(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// TreeBytes is the size of the regular files below root. A file removed
// while it is counted (packs evicted meanwhile) counts nothing.
func TreeBytes(t testing.TB, root string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		switch {
		case errors.Is(err, fs.ErrNotExist) && p != root:
			return nil
		case err == nil && info.Mode().IsRegular():
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
