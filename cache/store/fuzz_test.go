package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// FuzzDeltaChains: whatever graph of deltas a damaged or hostile store
// holds (chains past chunk.MaxChain, loops, a chunk against itself, references
// the store lacks, damaged values anywhere), a read of any of its chunks
// returns its bytes when its chain reaches a sound plain value within
// chunk.MaxChain deltas, and fails otherwise; it never returns wrong bytes and
// never waits for itself (a reader that finds a reference decoded in the
// LRU may read a chain longer than chunk.MaxChain: it decodes one delta). Byte i of graph codes chunk i: 0 plain, else a
// delta against chunk (b&0x7f-1) mod n+1, where n is a chunk the store
// lacks; the 0x80 bit damages the chunk's value.
func FuzzDeltaChains(f *testing.F) {
	const n = chunk.MaxChain + 3
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})   // one chain, chunk.MaxChain+2 deltas long
	f.Add([]byte{2, 1, 0x80, 4, 5, 6, 0, 0, 0, 0, 0}) // a loop, a damaged plain value
	f.Add([]byte{1, 12, 0x82, 0, 3})                  // a self-reference, a missing reference
	s, err := Open(f.TempDir(), Options{CacheBytes: 8 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	// Chunk i is tensor version i with the input's number in its first
	// bytes, so that every input stores chunks of its own.
	run := layouttest.TrainingRun(1, n+1, 1, 500, 1e-4)
	var input uint64
	f.Fuzz(func(t *testing.T, graph []byte) {
		input++
		raw := make([][]byte, n+1)
		hs := make([]chunk.Hash, n+1)
		for i := range raw {
			raw[i] = bytes.Clone(run[i][len(run[i])-1_000:])
			binary.LittleEndian.PutUint64(raw[i], input)
			hs[i] = chunk.Sum(raw[i])
		}
		ref := make([]int, n) // -1: plain
		damaged := make([]bool, n)
		for i := range n {
			ref[i] = -1
			if i < len(graph) {
				if b := int(graph[i] & 0x7f); b != 0 {
					ref[i] = (b - 1) % (n + 1)
				}
				damaged[i] = graph[i]&0x80 != 0
			}
			var v []byte
			if ref[i] < 0 {
				v = s.codecs.Encode(raw[i], "BF16")
			} else {
				v, _ = s.codecs.EncodeDelta(nil, raw[i], hs[ref[i]], raw[ref[i]], "BF16")
				if _, ok := chunk.DeltaReference(v); !ok {
					t.Skip("not coded as a delta")
				}
			}
			if damaged[i] {
				v[len(v)-1] ^= 0x10
			}
			if err := s.storeValue(hs[i], v, false); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			// Chunk i reads when its chain reaches a sound plain value
			// within chunk.MaxChain deltas, all of it sound.
			readable := false
			for c, depth := i, 0; c < n && !damaged[c] && depth <= chunk.MaxChain; c, depth = ref[c], depth+1 {
				if ref[c] < 0 {
					readable = true
					break
				}
			}
			for how, read := range []func() ([]byte, error){
				func() ([]byte, error) { return s.ReadLocal(hs[i]) },
				func() ([]byte, error) {
					got, err := s.chunks.Get(context.Background(), hs[i])
					defer got.Release()
					return bytes.Clone(got.Data), err
				},
			} {
				got, err := read()
				if err == nil && !bytes.Equal(got, raw[i]) {
					t.Fatalf("chunk %d (read %d): wrong bytes", i, how)
				}
				// A reader may also decode a longer chain's delta against a
				// reference in the LRU: still bounded, and its bytes are checked.
				if readable && err != nil || !readable && err == nil && how == 0 {
					t.Fatalf("chunk %d (read %d) of %v: %v, want it read %v", i, how, graph, err, readable)
				}
			}
		}
	})
}
