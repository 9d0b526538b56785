package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// An export run in a mount's daemon stops once its client has gone away,
// instead of writing on for no one; the same export for a client still
// there writes the whole file.
func TestLiveExportStopsWhenTheClientGoes(t *testing.T) {
	store, err := store.Open(filepath.Join(t.TempDir(), "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	data := bytes.Repeat([]byte("ckptfs"), 1<<20)
	c, _, err := store.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Namespace().Create(meta.RootIno, "f", meta.Inode{Mode: syscall.S_IFREG | 0o644, Content: *c}); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []bool{false, true} {
		live := &liveStore{store: store, gone: make(chan struct{})}
		if gone {
			close(live.gone)
		}
		a := &app{stdout: io.Discard, stderr: io.Discard, live: live}
		dst := filepath.Join(t.TempDir(), "out")
		err := a.export(store, "f", dst)
		got, _ := os.ReadFile(dst)
		switch {
		case gone && (!errors.Is(err, errClientGone) || len(got) == len(data)):
			t.Fatalf("client gone: export %v, %d of %d bytes written", err, len(got), len(data))
		case !gone && (err != nil || !bytes.Equal(got, data)):
			t.Fatalf("client there: export %v, %d of %d bytes", err, len(got), len(data))
		}
	}
}
