package remote

import (
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/remote/object"
)

// FuzzParseManifest feeds manifest objects, as a bucket might hold them,
// to the parser: what it accepts is safe to build a tree from.
func FuzzParseManifest(f *testing.F) {
	h := chunk.Sum([]byte("x"))
	f.Add([]byte(`{"format":"ckptfs-checkpoint/1","name":"ck","entries":[{"path":"","Mode":16877},` +
		`{"path":"a","Mode":33188,"Content":{"Size":1,"Chunks":[{"chunk.Hash":"` + h.String() + `","Len":1}]}},` +
		`{"path":"l","Mode":41471,"Target":"a"}]}`))
	f.Add([]byte(`{"format":"ckptfs-checkpoint/1","name":"ck","entries":[{"path":"","Mode":16877},{"path":"../x","Mode":33188}]}`))
	f.Fuzz(func(t *testing.T, js []byte) {
		m, err := Parse(New(object.NewMemory(), "", "s3://fuzz"), "ck", js)
		if err != nil {
			return
		}
		for i, e := range m.Entries {
			if i > 0 && PlainPath(e.Path) != nil {
				t.Fatalf("accepted path %q", e.Path)
			}
			if e.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
				t.Fatalf("kept set-id bits %#o", e.Mode)
			}
			var sum int64
			for _, c := range e.Content.Chunks {
				sum += int64(c.Len)
			}
			if sum != e.Content.Size {
				t.Fatalf("%q: chunks %d, size %d", e.Path, sum, e.Content.Size)
			}
		}
	})
}
