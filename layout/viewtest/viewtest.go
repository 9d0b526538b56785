// Package viewtest reads planned views in tests: a view file's bytes from
// its sources' bytes, the tensors its headers serve, checked against
// reads at random offsets, and that its pieces tile it and lie inside the
// sources they read.
package viewtest

import (
	"bytes"
	"math/rand"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/view"
)

// Lay plans a view as a folder's views do, with a budget of its own, and
// lays it out as spec says; it returns the warnings the plan gave.
func Lay(spec view.Spec, plan func(*view.Budget, *view.Warnings) (*view.Plan, error)) (*view.View, []string, error) {
	var w view.Warnings
	p, err := plan(view.NewBudget(), &w)
	if err != nil {
		return nil, w.List(), err
	}
	v, err := p.View(spec)
	return v, w.List(), err
}

// LaySources is Lay of a plan of sources.
func LaySources(sources []view.Source, spec view.Spec) (*view.View, []string, error) {
	return Lay(spec, func(b *view.Budget, w *view.Warnings) (*view.Plan, error) { return view.PlanSources(sources, b, w) })
}

// Read reads n bytes of view file f at off from the bytes of its sources.
func Read(f view.File, sources [][]byte, off, n int64) []byte {
	var out []byte
	for _, p := range f.Pieces(off, n) {
		if p.Inline != nil {
			out = append(out, p.Inline...)
		} else {
			out = append(out, sources[p.Source][p.SrcOff:p.SrcOff+p.Len]...)
		}
	}
	return out
}

// Tensors reads every tensor of a view by the safetensors headers it
// serves, checking random reads against the whole file on the way.
func Tensors(t testing.TB, v *view.View, sources [][]byte) map[string][]byte {
	t.Helper()
	r := rand.New(rand.NewSource(1))
	got := map[string][]byte{}
	for _, f := range v.Files {
		full := Read(f, sources, 0, f.Size)
		if int64(len(full)) != f.Size {
			t.Fatalf("%s: read %d of %d bytes", f.Name, len(full), f.Size)
		}
		for k := 0; k < 50; k++ {
			off, n := r.Int63n(f.Size+1), r.Int63n(f.Size/4+10)
			if !bytes.Equal(Read(f, sources, off, n), full[off:min(off+n, f.Size)]) {
				t.Fatalf("%s: read at %d+%d differs", f.Name, off, n)
			}
		}
		if strings.HasSuffix(f.Name, ".json") {
			continue
		}
		tensors, _ := layouttest.ParseSafetensors(t, full)
		for name, b := range tensors {
			got[name] = b
		}
	}
	return got
}

// CheckPieces fails t unless the pieces of every file of v tile it and
// lie inside their sources.
func CheckPieces(t testing.TB, v *view.View, sources [][]byte) {
	t.Helper()
	for _, vf := range v.Files {
		var n int64
		for _, p := range vf.Pieces(0, vf.Size) {
			if p.Off != n {
				t.Fatalf("%s: piece at %d, want %d", vf.Name, p.Off, n)
			}
			if p.Inline == nil && (p.SrcOff < 0 || p.SrcOff+p.Len > int64(len(sources[p.Source]))) {
				t.Fatalf("%s: piece %+v outside its %d-byte source", vf.Name, p, len(sources[p.Source]))
			}
			n += p.Len
		}
		if n != vf.Size {
			t.Fatalf("%s: pieces cover %d of %d bytes", vf.Name, n, vf.Size)
		}
	}
}
