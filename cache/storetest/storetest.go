// Package storetest is the fixture of tests that need a store: one opened
// in a temporary folder and closed with the test, and files put in it and
// read back through the store's own API; and the data such tests use:
// seeded random bytes and the size of a tree of files.
package storetest

import (
	"bytes"
	"io"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// Open opens a new store in a temporary folder, closed at the end of the
// test.
func Open(t testing.TB, o store.Options) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// AddFile stores data as file name in the root, replacing what was there,
// and returns its content.
func AddFile(t testing.TB, s *store.Store, name string, data []byte) *meta.Content {
	t.Helper()
	c, release, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := s.SyncChunks(); err != nil {
		t.Fatal(err)
	}
	ns := s.Namespace()
	in, err := ns.Lookup(meta.RootIno, name)
	if err != nil {
		in, err = ns.Create(meta.RootIno, name, meta.Inode{Mode: syscall.S_IFREG | 0o644})
	}
	if err == nil {
		_, err = ns.Update(in.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ReadAll reads content c back whole.
func ReadAll(t testing.TB, s *store.Store, c *meta.Content) []byte {
	t.Helper()
	out := make([]byte, c.Size)
	n, err := s.NewReader("test", c).ReadAt(out, 0)
	if err != nil && err != io.EOF || int64(n) != c.Size {
		t.Fatalf("read %d of %d: %v", n, c.Size, err)
	}
	return out
}
