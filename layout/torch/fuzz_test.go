package torch

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// torchSeeds adds the committed torch.save fixtures to a fuzz corpus.
func torchSeeds(f *testing.F, each func([]byte)) {
	names, _ := filepath.Glob("testdata/*.bin")
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		each(data)
	}
}

// withinBudget fails t if fn allocates more than a pickle of n bytes may.
func withinBudget(t *testing.T, n int, fn func()) {
	layouttest.WithinBudget(t, n, pickleMemoryBudget(n), fn)
}

func FuzzParseTorch(f *testing.F) {
	torchSeeds(f, func(b []byte) { f.Add(b) })
	for _, p := range layouttest.HostilePickles() {
		f.Add(layouttest.TorchZip(p, nil))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h *safetensors.Header
		var err error
		withinBudget(t, len(data), func() { h, _, err = parse(data) })
		if err != nil {
			return
		}
		// Every tensor must lie in the file and be exactly its shape's size.
		for _, x := range h.Tensors {
			size, ok := x.DType.Size()
			if !ok || x.Begin < 0 || x.End > int64(len(data)) {
				t.Fatalf("tensor %+v outside a %d-byte file", x, len(data))
			}
			for _, d := range x.Shape {
				size *= d
			}
			if size != x.Len() {
				t.Fatalf("tensor %+v spans %d bytes, shape says %d", x, x.Len(), size)
			}
		}
	})
}

func FuzzParsePickle(f *testing.F) {
	torchSeeds(f, func(b []byte) {
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return // the legacy format has no zip
		}
		for _, zf := range zr.File {
			if isDataPickle(zf.Name) {
				rc, _ := zf.Open()
				data, _ := io.ReadAll(rc)
				f.Add(data)
			}
		}
	})
	for _, p := range layouttest.HostilePickles() {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p *pickled
		var err error
		withinBudget(t, len(data), func() { p, err = parsePickle(data) })
		if err != nil {
			return
		}
		for _, s := range p.Storages {
			if s.Bytes < 0 {
				t.Fatalf("storage %+v", s)
			}
		}
	})
}
