package fs

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
	"github.com/ckptfs/ckptfs/cache/writes"
	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// testCase is a mount served in this process, as go-fuse's own tests do
// (newTestCase): a store in a temporary folder, its write path writing
// behind, and the node tree mounted on another. The mount goes at the end
// of the test, however the test ends.
type testCase struct {
	t      *testing.T
	store  *store.Store
	writes *writes.Path
	dir    string
	log    bytes.Buffer
}

func newTestCase(t *testing.T) *testCase {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("no fusermount3")
	}
	tc := &testCase{t: t, store: storetest.Open(t, store.Options{Mounted: true}), dir: t.TempDir()}
	w, err := writes.Open(tc.store, writes.Options{Behind: true})
	if err != nil {
		t.Fatal(err)
	}
	tc.writes = w
	log := slog.New(slog.NewTextHandler(&tc.log, nil))
	server, err := Mount(tc.dir, tc.store, w, Options{Logger: log})
	if err != nil {
		w.Close()
		t.Skipf("mount: %v", err) // no FUSE here: the integration suite needs it
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			exec.Command("fusermount3", "-u", "-z", tc.dir).Run()
		}
		w.Close() // before the store closes (storetest's cleanup)
	})
	return tc
}

func (tc *testCase) path(p ...string) string {
	return filepath.Join(append([]string{tc.dir}, p...)...)
}

// record is the stored record of path p, below the mount.
func (tc *testCase) record(p string) *meta.Inode {
	tc.t.Helper()
	in, err := tc.store.Namespace().Resolve(p)
	if err != nil {
		tc.t.Fatal(err)
	}
	return in
}

// Writers of one file share its content until a commit: two handles see
// each other's writes, O_APPEND places at the end, a read of a handle open
// for writing sees what is written, and a close commits all of them.
func TestWritersShareTheirContent(t *testing.T) {
	tc := newTestCase(t)
	a, err := os.OpenFile(tc.path("f"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.OpenFile(tc.path("f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.Write([]byte("first "))
	b.Write([]byte("second"))
	got := make([]byte, 20)
	if n, _ := a.ReadAt(got, 0); string(got[:n]) != "first second" {
		t.Fatalf("a writer reads %q", got[:n])
	}
	if st := tc.record("f"); st.Content.Size != 0 {
		t.Fatal("content committed before a close")
	}
	a.Close()
	b.Close()
	if got, err := os.ReadFile(tc.path("f")); err != nil || string(got) != "first second" {
		t.Fatalf("after the closes: %q, %v", got, err)
	}
	if in := tc.record("f"); in.Content.Staged == 0 {
		t.Fatal("the commit did not stage the file")
	}
}

// A file written and fsynced takes more writes after its staged file
// settled and went; so does one unlinked while open, whose handle reads
// what was written after the unlink.
func TestWritesAfterSettling(t *testing.T) {
	tc := newTestCase(t)
	f, err := os.OpenFile(tc.path("log"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first := storetest.Random(1, 100<<10)
	f.Write(first)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	in := tc.record("log")
	if err := tc.writes.SettleNow(in); err != nil {
		t.Fatal(err)
	}
	os.Remove(tc.store.StagedPath(in.Content.Staged)) // as the settler does after its grace
	if err := os.Remove(tc.path("log")); err != nil {
		t.Fatal(err)
	}
	more := storetest.Random(2, 10<<10)
	if _, err := f.Write(more); err != nil {
		t.Fatalf("a write after the staged file went: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync of a file unlinked while open: %v", err)
	}
	all := append(append([]byte(nil), first...), more...)
	got := make([]byte, len(all)+1)
	if n, err := f.ReadAt(got, 0); n != len(all) || !bytes.Equal(got[:n], all) || err != io.EOF {
		t.Fatalf("the unlinked file reads %d bytes: %v", n, err)
	}
}

// A file whose record goes without an unlink (its checkpoint replaced from
// a bucket) fails its writer's close rather than report the writes kept,
// also after one of its other names was unlinked.
func TestCloseOfAFileReplacedFails(t *testing.T) {
	tc := newTestCase(t)
	os.WriteFile(tc.path("f"), []byte("v1"), 0o644)
	if err := os.Link(tc.path("f"), tc.path("g")); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(tc.path("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("v2"))
	if err := os.Remove(tc.path("g")); err != nil { // one name of two
		t.Fatal(err)
	}
	if err := tc.store.Namespace().Remove(meta.RootIno, "f", false); err != nil { // as a refresh does
		t.Fatal(err)
	}
	if err := f.Close(); err == nil {
		t.Fatal("the close of writes to a file replaced under them returned success")
	}
}

// A folder's fsync succeeds: write, rename, fsync(folder) works.
func TestFolderFsync(t *testing.T) {
	tc := newTestCase(t)
	os.WriteFile(tc.path("f.tmp"), []byte("x"), 0o644)
	if err := os.Rename(tc.path("f.tmp"), tc.path("f")); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(tc.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatalf("fsync of a folder: %v", err)
	}
}

// A folder with weights has views found by name and not listed; they read
// as the tensors written, and refuse writes.
func TestViewsOfAFolder(t *testing.T) {
	tc := newTestCase(t)
	if err := os.Mkdir(tc.path("ck"), 0o755); err != nil {
		t.Fatal(err)
	}
	weights := layouttest.Safetensors(map[string]string{"format": "pt"},
		layouttest.Tensor{Name: "a", DType: "U8", Shape: []int64{3}, Data: []byte{1, 2, 3}},
		layouttest.Tensor{Name: "b", DType: "U8", Shape: []int64{2}, Data: []byte{4, 5}})
	if err := os.WriteFile(tc.path("ck", "model.safetensors"), weights, 0o644); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(tc.dir)
	if len(entries) != 1 {
		t.Fatalf("the root lists %d entries, views included", len(entries))
	}
	single, err := os.ReadFile(tc.path("ck@single", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	n := len(single)
	if !bytes.Equal(single[n-5:], []byte{1, 2, 3, 4, 5}) {
		t.Fatalf("@single ends %v", single[n-5:])
	}
	if err := os.WriteFile(tc.path("ck@single", "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("a write into a view: %v", err)
	}
	if _, err := os.Stat(tc.path("nope@single")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a view of no folder: %v", err)
	}
}
