package chunk_test

import (
	"bytes"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/ingest"
)

// BenchmarkDeltaTable measures deltas between the versions of a file for
// make bench-delta, in one timed pass (run it with -benchtime=1x):
// CKPTFS_DELTA_INPUTS names a JSON list of series ({"series", "kind",
// "files": [oldest, ..., newest]}), and it appends one JSON object per
// series to CKPTFS_DELTA_OUT. Each file is chunked by
// ingest.Run, as the store chunks it; a chunk already stored is stored
// once. "today" encodes every chunk plainly; "forward" stores the oldest
// file plainly and each chunk of a later one as a delta against the chunk
// at the same offset of the version before (EncodeDelta, which falls back
// to the plain value); "reverse" stores the newest plainly and each older
// one against the version after. Every delta is decoded back (against its
// reference, hash checked). Run with GOMAXPROCS=1 for one core's MB/s.
func BenchmarkDeltaTable(b *testing.B) {
	list, out := chunk.TableFiles(b, "CKPTFS_DELTA_INPUTS", "CKPTFS_DELTA_OUT", "bench-delta")
	var series []struct {
		Series, Kind string
		Files        []string
	}
	data, err := os.ReadFile(list)
	if err == nil {
		err = json.Unmarshal(data, &series)
	}
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range series {
		chunks := &collector{raw: map[chunk.Hash]piece{}}
		var versions []version
		raw := 0
		for _, path := range s.Files {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			content, err := ingest.Run(f, chunks)
			f.Close()
			if err != nil {
				b.Fatalf("%s: %v", path, err)
			}
			versions = append(versions, newVersion(content.Chunks))
			raw += int(content.Size)
		}
		c := chunk.NewCodecs()
		today := map[chunk.Hash]int{}
		for _, v := range versions {
			for _, h := range v.order {
				if _, ok := today[h]; !ok {
					p := chunks.raw[h]
					today[h] = len(c.Encode(p.raw, p.hint))
				}
			}
		}
		order := make([]int, len(versions))
		for i := range order {
			order[i] = i
		}
		fwd := chain(b, c, chunks, versions, order)
		for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
			order[i], order[j] = order[j], order[i]
		}
		rev := chain(b, c, chunks, versions, order)
		json.NewEncoder(out).Encode(map[string]any{
			"series": s.Series, "kind": s.Kind, "files": len(s.Files), "raw": raw,
			"today": sum(today), "forward": fwd.stored, "reverse": rev.stored,
			"delta_chunks": fwd.deltas, "chunks": len(today),
			"encode_mbs": fwd.encodeMBs(), // EncodeDelta of every chunk offered a reference: plain value, delta, check
			"decode_mbs": fwd.decodeMBs(), // DecodeChecksummedWith of the deltas
		})
	}
}

type piece struct {
	raw  []byte
	hint chunk.Hint
}

// collector keeps every chunk ingest cuts, by hash.
type collector struct {
	mu  sync.Mutex
	raw map[chunk.Hash]piece
}

func (c *collector) PutChunk(raw []byte, hint chunk.Hint) (chunk.Ref, error) {
	h := chunk.Sum(raw)
	c.mu.Lock()
	if _, ok := c.raw[h]; !ok {
		c.raw[h] = piece{bytes.Clone(raw), hint}
	}
	c.mu.Unlock()
	return chunk.Ref{Hash: h, Len: uint32(len(raw))}, nil
}

// version is one file's chunks in order, and which starts at each offset.
type version struct {
	order []chunk.Hash
	at    map[int64]chunk.Hash
	start []int64
}

func newVersion(refs []chunk.Ref) version {
	v := version{at: map[int64]chunk.Hash{}}
	var off int64
	for _, r := range refs {
		v.order = append(v.order, r.Hash)
		v.start = append(v.start, off)
		v.at[off] = r.Hash
		off += int64(r.Len)
	}
	return v
}

type chainResult struct {
	stored, deltas int
	tried, decoded int // bytes of chunks offered a reference; of those stored as deltas
	encode, decode time.Duration
}

func (r chainResult) encodeMBs() float64 { return float64(r.tried) / r.encode.Seconds() / 1e6 }
func (r chainResult) decodeMBs() float64 { return float64(r.decoded) / r.decode.Seconds() / 1e6 }

// chain stores the versions in the given order, the first plainly and
// each chunk of the others against the chunk at its offset in the version
// stored before it, and decodes every delta back.
func chain(t testing.TB, c *chunk.Codecs, chunks *collector, versions []version, order []int) chainResult {
	var r chainResult
	stored := map[chunk.Hash]bool{}
	type delta struct {
		h   chunk.Hash
		v   []byte
		ref []byte
	}
	var deltas []delta
	for k, vi := range order {
		v := versions[vi]
		for i, h := range v.order {
			if stored[h] {
				continue
			}
			stored[h] = true
			p := chunks.raw[h]
			ref, ok := chunk.Hash{}, false
			if k > 0 {
				ref, ok = versions[order[k-1]].at[v.start[i]]
			}
			if !ok || ref == h {
				r.stored += len(c.Encode(p.raw, p.hint))
				continue
			}
			refRaw := chunks.raw[ref].raw
			start := time.Now()
			val, good := c.EncodeDelta(nil, p.raw, ref, refRaw, p.hint)
			r.encode += time.Since(start)
			r.tried += len(p.raw)
			if !good {
				t.Fatalf("chunk %s: a delta did not decode", h.Short())
			}
			r.stored += len(val)
			if _, isDelta := chunk.DeltaReference(val); isDelta {
				r.deltas++
				r.decoded += len(p.raw)
				deltas = append(deltas, delta{h, val, refRaw})
			}
		}
	}
	start := time.Now()
	for _, d := range deltas {
		if _, err := c.DecodeChecksummedWith(d.h, d.v, d.ref); err != nil {
			t.Fatal(err)
		}
	}
	r.decode = time.Since(start)
	for _, d := range deltas {
		if got, err := c.DecodeWith(d.h, d.v, d.ref); err != nil || chunk.Sum(got) != d.h {
			t.Fatalf("chunk %s does not decode back: %v", d.h.Short(), err)
		}
	}
	return r
}

func sum(m map[chunk.Hash]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
