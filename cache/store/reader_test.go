package store

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func TestReadaheadRampsUpOnSequentialReads(t *testing.T) {
	ra := NewReadahead()
	var got []int
	for i := 0; i < 8; i++ {
		got = append(got, ra.next(i, i))
	}
	want := []int{0, 2, 4, 8, 16, 32, 32, 32}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sequential reads loaded %v ahead, want %v", got, want)
		}
	}
	// A random read and the kernel's readahead request after it: nothing
	// ahead, where a window of 32 tripled a loader's bytes.
	for _, at := range []int{40, 7, 90, 3} {
		if n := ra.next(at, at) + ra.next(at+1, at+1); n != 0 {
			t.Fatalf("a random read at %d loaded %d chunks ahead", at, n)
		}
	}
}

// Two readers at different offsets, reading in turn, each get their
// readahead: with one position per file each read looked random to it.
func TestTwoReadersKeepTheirOwnReadahead(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CacheBytes: 256 << 20}) // nothing evicted
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data := random(3, 48<<20)
	c, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Chunks) < 30 {
		t.Fatalf("%d chunks, the test needs 30", len(c.Chunks))
	}
	r := s.NewReader("test", c)
	a, b := NewReadahead(), NewReadahead()
	starts := r.starts
	readChunk := func(ra *Readahead, i int) {
		p := make([]byte, r.chunks[i].Len)
		if _, err := r.ReadAhead(context.Background(), ra, p, starts[i]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[starts[i]:starts[i+1]]) {
			t.Fatalf("chunk %d read wrong", i)
		}
	}
	for k := 0; k < 4; k++ {
		readChunk(a, k)
		readChunk(b, 15+k)
	}
	// Readahead is bounded (a load is dropped when every slot is busy), so
	// each reader must find some chunk of its window loaded, not all.
	loadedAhead := func(from, to int) bool {
		for i := from; i <= to; i++ {
			if _, ok := s.chunks.Peek(r.chunks[i].Hash); ok {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !loadedAhead(4, 11) || !loadedAhead(19, 26) {
		if time.Now().After(deadline) {
			t.Fatalf("after four reads in a row, reader a has chunks 4-11 loaded ahead: %v, reader b chunks 19-26: %v", loadedAhead(4, 11), loadedAhead(19, 26))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
