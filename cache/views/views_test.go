package views

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/ckptfs/ckptfs/layout/view"
)

// storedFolder opens a store in a temporary folder with a folder "ck" in
// it, and a function that stores a file there.
func storedFolder(t *testing.T) (*store.Store, *meta.Inode, func(name string, data []byte, mode uint32)) {
	s, err := store.Open(filepath.Join(t.TempDir(), "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	dir, _ := s.Namespace().Create(meta.RootIno, "ck", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	return s, dir, func(name string, data []byte, mode uint32) {
		t.Helper()
		c, _, err := s.Ingest(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Namespace().Create(dir.Ino, name, meta.Inode{Mode: syscall.S_IFREG | mode, Content: *c}); err != nil {
			t.Fatal(err)
		}
	}
}

// readViewFile reads view file name whole.
func readViewFile(t *testing.T, v *View, name string) []byte {
	t.Helper()
	i, ok := v.FileIndex(name)
	if !ok {
		t.Fatalf("no %s", name)
	}
	buf := make([]byte, v.Files[i].Size)
	if n, err := v.ReadAt(context.Background(), i, buf, 0); n != len(buf) || (err != nil && err != io.EOF) {
		t.Fatalf("read %d of %d: %v", n, len(buf), err)
	}
	return buf
}

// TestBuildFromAStoredFolder plans views of a stored folder holding two
// shards named by an index, a stray safetensors file the index does not
// name, and a config: the shards are the weights, the rest passes through,
// and the view's bytes hold every tensor of the shards that only one of
// them defines.
func TestBuildFromAStoredFolder(t *testing.T) {
	s, dir, put := storedFolder(t)
	put("a.safetensors", layouttest.TinyTensorsHeader(3, 10), 0o644)
	put("b.safetensors", layouttest.TinyTensorsHeader(2, 10), 0o600)
	put("stray.safetensors", layouttest.TinyTensorsHeader(1, 10), 0o644)
	put("model.safetensors.index.json", safetensors.EmitIndex(5, map[string]string{"t0": "a.safetensors", "t1": "b.safetensors"}), 0o644)
	put("config.json", []byte("{}"), 0o644)

	entries, _ := s.Namespace().ReadDir(dir.Ino)
	if !HasWeights(entries) {
		t.Fatal("a folder of safetensors has no weights")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := Build(s, nil, log, dir.Ino, "/ck", view.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Sources) != 2 || len(v.Weights) != 2 || v.Weights[1].Mode&0o777 != 0o600 {
		t.Fatalf("%d sources, weights %+v", len(v.Sources), v.Weights)
	}
	var extra []string
	for _, x := range v.Extra {
		extra = append(extra, x.Name)
	}
	if len(extra) != 2 || extra[0] != "config.json" || extra[1] != "stray.safetensors" {
		t.Fatalf("passed through %q", extra)
	}
	buf := readViewFile(t, v, "model.safetensors")
	h, err := safetensors.ParseFile(buf, int64(len(buf)))
	if err != nil || len(h.Tensors) != 1 || h.Tensors[0].Name != "t2" { // a and b both define t0 and t1
		t.Fatalf("view header: %v, %d tensors", err, len(h.Tensors))
	}
	again, _ := Build(s, nil, log, dir.Ino, "/ck", view.Spec{Shards: true, MaxShardSize: 1})
	if again.Key != v.Key {
		t.Fatal("the same folder state gave another key")
	}
}

// A panic while planning refuses the view with a log line and its stack,
// and the caller (the mount's daemon) goes on. A nil record, which the
// planner does not expect, stands in for a planner bug; control: the same
// folder with its record plans.
func TestPlanningPanicRefusesTheView(t *testing.T) {
	s, dir, put := storedFolder(t)
	put("model.safetensors", layouttest.TinyTensorsHeader(3, 10), 0o644)
	entries, inodes, err := ReadFolder(s, nil, dir.Ino)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	if f, err := Read(s, log, "/ck", entries, inodes, "k"); err != nil {
		t.Fatalf("control: %v", err)
	} else if _, err := f.View(view.Spec{}); err != nil {
		t.Fatalf("control: %v", err)
	}
	inodes["model.safetensors"] = nil
	v, err := Read(s, log, "/ck", entries, inodes, "k")
	if v != nil || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("view %v, error %v; want ENOENT", v, err)
	}
	for _, want := range []string{"view refused: planning failed", "dir=/ck", "nil pointer", "views.weightFiles"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, logged.String())
		}
	}
}
