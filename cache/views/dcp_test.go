package views

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/ckptfs/ckptfs/layout/view"
)

// tensorsOf reads a safetensors file's tensors by name.
func tensorsOf(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	h, err := safetensors.ParseFile(b, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, x := range h.Tensors {
		out[x.Name] = b[h.DataStart+x.Begin : h.DataStart+x.End]
	}
	return out
}

// TestDCPFolderViews stores a 4-rank DCP checkpoint torch wrote, with a
// config: the view serves its model tensors, as the reference holds them,
// passes the config through and keeps the checkpoint's own files out; a
// prefix file chooses other tensors.
func TestDCPFolderViews(t *testing.T) {
	s, dir, putMode := storedFolder(t)
	put := func(name string, data []byte) { putMode(name, data, 0o644) }
	src := "../../layout/dcp/testdata/4ranks"
	names, _ := filepath.Glob(src + "/*.distcp")
	for _, name := range append(names, src+"/.metadata") {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		put(filepath.Base(name), b)
	}
	put("config.json", []byte("{}"))
	ref, err := os.ReadFile(src + "/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	want := tensorsOf(t, ref)

	entries, _ := s.Namespace().ReadDir(dir.Ino)
	if !HasWeights(entries) {
		t.Fatal("a DCP folder has no weights")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	read := func() (*View, map[string][]byte) {
		v, err := Build(s, nil, log, dir.Ino, "/ck", view.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		return v, tensorsOf(t, readViewFile(t, v, "model.safetensors"))
	}
	v, got := read()
	if len(got) != len(want) {
		t.Fatalf("%d tensors, want %d", len(got), len(want))
	}
	for name, b := range want {
		if !bytes.Equal(got[name], b) {
			t.Fatalf("%s differs", name)
		}
	}
	// Read in odd windows, as the kernel's reads cut a file: pieces of
	// several ranks and rows in each, some cut mid-row (this fixture's
	// sources are one chunk each: store.TestReadSpansReadsWhatReadAtReads
	// crosses chunks); and at the end.
	whole := readViewFile(t, v, "model.safetensors")
	i, _ := v.FileIndex("model.safetensors")
	for _, window := range []int{97, 777, 4096} {
		buf := make([]byte, window)
		for off := 0; off < len(whole); off += window {
			n, err := v.ReadAt(context.Background(), i, buf, int64(off))
			if want := min(window, len(whole)-off); n != want || (err != nil && !(err == io.EOF && n < window)) {
				t.Fatalf("window %d at %d: read %d, %v; want %d", window, off, n, err, want)
			}
			if !bytes.Equal(buf[:n], whole[off:off+n]) {
				t.Fatalf("window %d at %d: bytes differ from the whole read", window, off)
			}
		}
	}
	if n, err := v.ReadAt(context.Background(), i, make([]byte, 10), int64(len(whole))); n != 0 || err != io.EOF {
		t.Fatalf("a read at the end: %d, %v", n, err)
	}
	if len(v.Extra) != 1 || v.Extra[0].Name != "config.json" || len(v.Weights) != len(names)+1 {
		t.Fatalf("passed through %+v, %d weights", v.Extra, len(v.Weights))
	}
	put(ModelPrefixFile, []byte("model.layer.\n"))
	_, got = read()
	if len(got) != 3 || !bytes.Equal(got["0.bias"], want["layer.0.bias"]) {
		t.Fatalf("with a prefix file: %d tensors", len(got))
	}
}
