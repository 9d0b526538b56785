package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// rmLive runs 'ckptfs rm name' as a mount's daemon runs it for a client:
// checked in store, then removed through mnt (here a local folder standing
// for the mount), with checked run in between.
func rmLive(store *store.Store, mnt, name string, checked func(string)) error {
	a := &app{args: []string{"rm", name}, stdout: io.Discard, stderr: io.Discard,
		live: &liveStore{store: store, mnt: mnt, checked: checked}}
	return a.rootCmd(a.rmCmd()).Execute()
}

// mkdirs makes the folders of path rel in the store and below mnt.
func mkdirs(t *testing.T, store *store.Store, mnt, rel string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(mnt, rel), 0o755); err != nil {
		t.Fatal(err)
	}
	parent := uint64(meta.RootIno)
	for _, name := range strings.Split(rel, "/") {
		in, err := store.Namespace().Lookup(parent, name)
		if errors.Is(err, syscall.ENOENT) {
			in, err = store.Namespace().Create(parent, name, meta.Inode{Mode: syscall.S_IFDIR | 0o755})
		}
		if err != nil {
			t.Fatal(err)
		}
		parent = in.Ino
	}
}

// A folder on the path to what rm removes through the mount, swapped for a
// symlink after the store said the path is there: the removal must not
// follow it out of the mount. Control: without the swap, rm removes it.
func TestLiveRmFollowsNoSymlink(t *testing.T) {
	store, err := store.Open(filepath.Join(t.TempDir(), "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	mnt, outside := t.TempDir(), t.TempDir()
	mkdirs(t, store, mnt, "u/a/b/c")
	if err := os.MkdirAll(filepath.Join(outside, "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(outside, "b", "c", "keep"), []byte("root's"), 0o644)
	swap := func(string) {
		a := filepath.Join(mnt, "u", "a")
		if err := os.Rename(a, a+".moved"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, a); err != nil {
			t.Fatal(err)
		}
	}
	err = rmLive(store, mnt, "u/a/b", swap)
	if _, serr := os.Stat(filepath.Join(outside, "b", "c", "keep")); serr != nil {
		t.Fatalf("rm followed the symlink out of the mount (rm: %v): %v", err, serr)
	}
	if err == nil {
		t.Fatal("rm of a path through a symlink succeeded")
	}
	// Control: the same removal, unswapped, removes the tree.
	mkdirs(t, store, mnt, "v/a/b/c")
	os.WriteFile(filepath.Join(mnt, "v", "a", "b", "c", "f"), []byte("x"), 0o644)
	os.Symlink(outside, filepath.Join(mnt, "v", "a", "b", "link")) // removed, not followed
	if err := rmLive(store, mnt, "v/a/b", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "v", "a", "b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("control: v/a/b still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "b", "c", "keep")); err != nil {
		t.Fatalf("control: a symlink inside the tree was followed: %v", err)
	}
}
