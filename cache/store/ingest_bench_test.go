package store

import (
	"encoding/binary"
	"math"
	"math/rand"
	"sync/atomic"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// BenchmarkPutChunkF32 stores distinct 1 MiB chunks of random-normal fp32,
// on all cores as ingest does: hash, encode, pack append, index.
func BenchmarkPutChunkF32(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r := rand.New(rand.NewSource(1))
	base := make([]byte, chunk.MaxSize)
	for i := 0; i < len(base); i += 4 {
		binary.LittleEndian.PutUint32(base[i:], math.Float32bits(float32(r.NormFloat64()*0.02)))
	}
	var seq atomic.Uint64
	b.SetBytes(chunk.MaxSize)
	b.RunParallel(func(pb *testing.PB) {
		raw := append([]byte(nil), base...)
		for pb.Next() {
			binary.LittleEndian.PutUint64(raw, seq.Add(1)) // a new chunk each time
			if _, err := s.PutChunk(raw, "F32"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
