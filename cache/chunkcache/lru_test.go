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
	add := func(i byte, n int) *entry {
		e := &entry{data: make([]byte, n)}
		e.refs.Store(1)
		l.add(h(i), e)
		return e
	}
	one := add(1, 4)
	two := add(2, 4)
	if e := l.get(h(1)); e == nil { // 1 is now the most recent
		t.Fatal("chunk 1 missing")
	}
	add(3, 4) // 12 bytes: 2 goes
	if l.contains(h(2)) || !l.contains(h(1)) || !l.contains(h(3)) {
		t.Fatalf("after the third add: 1 %v, 2 %v, 3 %v; want 2 gone", l.contains(h(1)), l.contains(h(2)), l.contains(h(3)))
	}
	if l.used != 8 {
		t.Fatalf("used %d bytes, want 8", l.used)
	}
	if four := add(4, 11); l.contains(h(4)) || l.used != 8 || four.refs.Load() != 1 {
		t.Fatalf("a chunk larger than the LRU was kept (used %d, %d holders)", l.used, four.refs.Load())
	}
	if again := add(1, 9); again.refs.Load() != 1 { // already there: kept as it is
		t.Fatalf("a second add of chunk 1 was held")
	}
	if e := l.get(h(1)); len(e.data) != 4 {
		t.Fatalf("a second add replaced chunk 1: %d bytes", len(e.data))
	}
	// Each holder counts: the adder, the LRU, and each get.
	if two.refs.Load() != 1 || one.refs.Load() != 4 {
		t.Fatalf("chunk 2 evicted has %d holders, want 1 (its adder); chunk 1 %d, want 4", two.refs.Load(), one.refs.Load())
	}
}
