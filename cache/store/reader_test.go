package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
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

// The window is counted in the reader's bytes: a reader of 128 KiB a call
// (one source of a tile) earns 4 MiB at most, a reader of 1 MiB 32 chunks.
func TestReadaheadWindowIsInTheReadersBytes(t *testing.T) {
	const mib = 1 << 20
	r := &FileReader{chunks: make([]chunk.Ref, 100)}
	for i := range r.chunks {
		r.chunks[i].Len = mib
	}
	for _, c := range []struct {
		want int64
		end  int
	}{
		{0, 10},              // no readahead
		{1, 11},              // a byte needs the next chunk
		{32 * 128 << 10, 14}, // 32 reads of 128 KiB
		{32 * mib, 42},       // 32 reads of 1 MiB
		{64 * mib, 42},       // at most readaheadChunks
	} {
		if got := r.windowEnd(10, c.want); got != c.end {
			t.Errorf("a window of %d bytes after chunk 10 ends at chunk %d, want %d", c.want, got, c.end)
		}
	}
	if got := r.windowEnd(98, 32*mib); got != 99 {
		t.Errorf("a window past the last chunk ends at %d, want 99", got)
	}
}

// Sequential reads that each cross into the next chunk, as 1 MiB reads
// over chunks at other offsets do, count once each: the streak grows by
// one a read and earns a window (a readahead that asked its position at
// every chunk it warmed took the read for a jump back and lost it).
func TestReadsAcrossChunksKeepTheirStreak(t *testing.T) {
	_, r := ingested(t, random(4, 16<<20))
	if len(r.chunks) < 6 {
		t.Fatalf("%d chunks, the test needs 6", len(r.chunks))
	}
	ra := NewReadahead()
	for k := range 4 {
		off := (r.starts[k] + r.starts[k+1]) / 2
		p := make([]byte, r.starts[k+1]-off+1) // one byte into chunk k+1
		if _, err := r.ReadAhead(context.Background(), ra, p, off); err != nil {
			t.Fatal(err)
		}
	}
	if ra.streak != 4 || ra.last != 4 {
		t.Fatalf("after four reads in a row the streak is %d ending at chunk %d, want 4 at chunk 4", ra.streak, ra.last)
	}
}

// ingested opens a store whose chunk cache holds data whole, stores data
// in it and returns a reader of it.
func ingested(tb testing.TB, data []byte) (*Store, *FileReader) {
	tb.Helper()
	s, err := Open(tb.TempDir(), Options{CacheBytes: 256 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	c, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	return s, s.NewReader("test", c)
}

// Two readers at different offsets, reading in turn, each get their
// readahead: with one position per file each read looked random to it.
func TestTwoReadersKeepTheirOwnReadahead(t *testing.T) {
	data := random(3, 48<<20)
	s, r := ingested(t, data)
	if len(r.chunks) < 30 {
		t.Fatalf("%d chunks, the test needs 30", len(r.chunks))
	}
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

// ReadSpans reads a tile's interleaved row parts as one read each would:
// strided spans, spans across chunk boundaries and spans out of order give
// the source's bytes; a span past the end is io.EOF.
func TestReadSpansReadsWhatReadAtReads(t *testing.T) {
	data := random(5, 12<<20)
	_, r := ingested(t, data)
	if len(r.chunks) < 7 {
		t.Fatalf("%d chunks, the test needs 7", len(r.chunks))
	}
	check := func(what string, spans []Span) {
		t.Helper()
		if err := r.ReadSpans(context.Background(), spans); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, sp := range spans {
			if !bytes.Equal(sp.Dst, data[sp.Off:sp.Off+int64(len(sp.Dst))]) {
				t.Fatalf("%s: span at %d (%d bytes) read wrong", what, sp.Off, len(sp.Dst))
			}
		}
	}
	// One rank's part of a tensor split on dim 1: 1 KiB of every 8 KiB row.
	var rows []Span
	for off := int64(3 << 10); off+1024 <= int64(len(data)); off += 8 << 10 {
		rows = append(rows, Span{Dst: make([]byte, 1024), Off: off})
	}
	check("rows", rows)
	// Spans across every chunk boundary, and in reverse order.
	var across []Span
	for i := len(r.starts) - 2; i > 0; i-- {
		across = append(across, Span{Dst: make([]byte, 5000), Off: r.starts[i] - 2500})
	}
	check("across boundaries, in reverse", across)
	check("the whole", []Span{{Dst: make([]byte, len(data)), Off: 0}})

	if err := r.ReadSpans(context.Background(), []Span{{Dst: make([]byte, 10), Off: int64(len(data)) - 5}}); err != io.EOF {
		t.Fatalf("a span past the end: %v, want io.EOF", err)
	}
	if err := r.ReadSpans(context.Background(), []Span{{Dst: make([]byte, 10), Off: -5}}); !errors.Is(err, errNegativeOffset) {
		t.Fatalf("a span before the start: %v", err)
	}

	// Readahead: spans through chunks 0 to 3 in four reads, as a tile's
	// part is read row after row, load the chunk after them (a window of
	// reads of 200 bytes is one chunk).
	_, fresh := ingested(t, data)
	for i := range 4 {
		sp := Span{Dst: make([]byte, 100), Off: fresh.starts[i] + 10}
		if err := fresh.ReadSpans(context.Background(), []Span{sp, {Dst: make([]byte, 100), Off: sp.Off + 1000}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		loaded := false
		for i := 4; i <= 6 && i < len(fresh.chunks); i++ {
			_, ok := fresh.store.chunks.Peek(fresh.chunks[i].Hash)
			loaded = loaded || ok
		}
		if loaded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("four reads of spans in a row loaded nothing ahead")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkTileRows reads one rank's parts of 1 MiB of a tensor split 8
// ways on dim 1 (512 bytes of each 4 KiB row) from cached chunks: one
// ReadAtContext a part, as views read them before ReadSpans, against one
// ReadSpans.
func BenchmarkTileRows(b *testing.B) {
	data := random(7, 16<<20)
	_, r := ingested(b, data)
	whole := make([]byte, len(data))
	if _, err := r.ReadAt(whole, 0); err != nil {
		b.Fatal(err)
	}
	spans := make([]Span, 0, 256)
	for row := int64(0); row < 256; row++ { // 1 MiB of the view: 256 rows of 4 KiB
		spans = append(spans, Span{Dst: make([]byte, 512), Off: 4<<20 + row*512})
	}
	b.Run("ReadAtContext", func(b *testing.B) {
		b.SetBytes(8 * 256 * 512)
		for b.Loop() {
			for range 8 { // the 8 ranks' sources
				for _, sp := range spans {
					if _, err := r.ReadAtContext(context.Background(), sp.Dst, sp.Off); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	})
	b.Run("ReadSpans", func(b *testing.B) {
		b.SetBytes(8 * 256 * 512)
		for b.Loop() {
			for range 8 {
				if err := r.ReadSpans(context.Background(), spans); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
