package localfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// An entry swapped for a symlink between its stat and its open fails the
// import: the target (say a root-only file) is never read and stored
// under the swapped entry's owner and mode.
func TestImportRefusesASwappedEntry(t *testing.T) {
	src := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("root only"), 0o600)
	os.WriteFile(filepath.Join(src, "weights.bin"), []byte("mine"), 0o644)
	store, err := store.Open(filepath.Join(t.TempDir(), "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	im := &Importer{Store: store, Bar: discard{}, AfterStat: func(p string) {
		if filepath.Base(p) == "weights.bin" {
			os.Remove(p)
			os.Symlink(secret, p)
		}
	}}
	err = im.Copy(src, meta.RootIno, "ck")
	if err == nil || !strings.Contains(err.Error(), "weights.bin") {
		t.Fatalf("import of a swapped entry: %v", err)
	}
	if in, err := store.Namespace().Resolve("ck/weights.bin"); err == nil {
		t.Fatalf("stored %d bytes for the swapped entry", in.Content.Size)
	}
	// Without the swap the same tree imports, symlinks as symlinks.
	os.Remove(filepath.Join(src, "weights.bin"))
	os.WriteFile(filepath.Join(src, "weights.bin"), []byte("mine"), 0o644)
	os.Symlink("weights.bin", filepath.Join(src, "link"))
	im.AfterStat = nil
	if err := im.Copy(src, meta.RootIno, "ok"); err != nil {
		t.Fatal(err)
	}
	if in, err := store.Namespace().Resolve("ok/link"); err != nil || in.Target != "weights.bin" {
		t.Fatalf("symlink: %+v %v", in, err)
	}
	if in, err := store.Namespace().Resolve("ok/weights.bin"); err != nil || in.Content.Size != 4 || in.Mode&0o777 != 0o644 {
		t.Fatalf("file: %+v %v", in, err)
	}
}

// discard is a progress bar that shows nothing.
type discard struct{}

func (discard) Add64(int64) error { return nil }
