package chunkcache

import (
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// The LRU keeps at most its bytes, drops the least recently used first, and
// refuses a chunk larger than all of it.
func TestLRUKeepsItsBytes(t *testing.T) {
	l := newLRU(10)
	h := func(i byte) chunk.Hash { return chunk.Hash{i} }
	l.add(h(1), make([]byte, 4))
	l.add(h(2), make([]byte, 4))
	if _, ok := l.get(h(1)); !ok { // 1 is now the most recent
		t.Fatal("chunk 1 missing")
	}
	l.add(h(3), make([]byte, 4)) // 12 bytes: 2 goes
	if l.contains(h(2)) || !l.contains(h(1)) || !l.contains(h(3)) {
		t.Fatalf("after the third add: 1 %v, 2 %v, 3 %v; want 2 gone", l.contains(h(1)), l.contains(h(2)), l.contains(h(3)))
	}
	if l.used != 8 {
		t.Fatalf("used %d bytes, want 8", l.used)
	}
	l.add(h(4), make([]byte, 11))
	if l.contains(h(4)) || l.used != 8 {
		t.Fatalf("a chunk larger than the LRU was kept (used %d)", l.used)
	}
	l.add(h(1), make([]byte, 9)) // already there: kept as it is
	if d, _ := l.get(h(1)); len(d) != 4 {
		t.Fatalf("a second add replaced chunk 1: %d bytes", len(d))
	}
}
