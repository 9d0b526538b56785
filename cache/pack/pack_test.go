package pack

import (
	"os"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// A failed append seals its pack: the next record goes to a new pack, so
// nothing in use ever follows the hole.
func TestFailedAppendSealsPack(t *testing.T) {
	p, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	first, err := p.Append(chunk.Sum([]byte("a")), []byte("value a"))
	if err != nil {
		t.Fatal(err)
	}
	readOnly, err := os.Open(p.Path(first.Pack))
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.cur, p.files[first.Pack] = readOnly, readOnly // the next write fails
	p.mu.Unlock()
	if _, err := p.Append(chunk.Sum([]byte("b")), []byte("value b")); err == nil {
		t.Fatal("a write to a read-only pack succeeded")
	}
	next, err := p.Append(chunk.Sum([]byte("c")), []byte("value c"))
	if err != nil {
		t.Fatal(err)
	}
	if next.Pack == first.Pack {
		t.Fatalf("appended to pack %d after a failed write to it", first.Pack)
	}
}

// A record is read back only through a location that points at it.
func TestReadChecksTheRecord(t *testing.T) {
	p, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h := chunk.Sum([]byte("a"))
	loc, err := p.Append(h, []byte("value a"))
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := p.Read(h, loc, func(v []byte) error { got = string(v); return nil }); err != nil || got != "value a" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := p.Read(chunk.Sum([]byte("b")), loc, func([]byte) error { return nil }); err == nil {
		t.Fatal("a location read as another chunk's record")
	}
	if l, err := DecodeLoc(loc.Encode()); err != nil || l != loc {
		t.Fatalf("location round trip: %+v %v", l, err)
	}
}
