package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// pairs pairs the chunks of older and newer, two versions of one layout.
func pairs(older, newer *meta.Content) []DeltaPair {
	var out []DeltaPair
	for i, c := range older.Chunks {
		if i < len(newer.Chunks) && newer.Chunks[i].Hash != c.Hash && newer.Chunks[i].Len == c.Len {
			out = append(out, DeltaPair{Chunk: c.Hash, Ref: newer.Chunks[i].Hash})
		}
	}
	return out
}

// storeRun stores the versions of a run as files v0, v1, ..., each older
// one as deltas against the next as it comes, as the versions encoder
// does, and returns their contents.
func storeRun(t *testing.T, s *Store, run [][]byte) []*meta.Content {
	t.Helper()
	var cs []*meta.Content
	for i, data := range run {
		cs = append(cs, addFile(t, s, fmt.Sprintf("v%d", i), data))
		if i == 0 {
			continue
		}
		res, err := s.StoreAsDeltas(context.Background(), pairs(cs[i-1], cs[i]))
		if err != nil {
			t.Fatal(err)
		}
		if res.After*4 > res.Before { // a chain at its bound stores none
			t.Fatalf("version %d: %+v: the deltas saved little", i-1, res)
		}
	}
	return cs
}

// readVerified reads content c chunk by chunk, each verified through its
// chain and nothing from the LRU.
func readVerified(s *Store, c *meta.Content) ([]byte, error) {
	var out []byte
	for _, ref := range c.Chunks {
		raw, err := s.ReadLocal(ref.Hash)
		if err != nil {
			return nil, err
		}
		out = append(out, raw...)
	}
	return out, nil
}

// reclaimAll runs reclaim passes until one frees nothing: each frees the
// deltas the last one left no reference of.
func reclaimAll(t *testing.T, s *Store) {
	t.Helper()
	for range 2*chunk.MaxChain + 4 {
		if res := pass(t, s); res.Chunks == 0 && res.Recent == 0 {
			return
		}
	}
	t.Fatal("reclaim kept freeing")
}

// openOffline opens a store as the CLI does, with packs of 1 MiB.
func openOffline(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.packs.SetTarget(1 << 20)
	return s
}

func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// Three versions of a run, stored as a chain of reverse deltas, read back
// byte for byte after their removal in every order, the newest first
// included, by the online reclaim and by an offline GC; when all are gone,
// so are their chunks and packs.
func TestDeltasOutliveAnyRemoval(t *testing.T) {
	run := layouttest.TrainingRun(1, 3, 2, 40_000, 1e-4)
	for _, offline := range []bool{false, true} {
		for _, order := range permutations(len(run)) {
			t.Run(fmt.Sprintf("offline=%v/%v", offline, order), func(t *testing.T) {
				s := openReclaiming(t)
				if offline {
					s = openOffline(t)
				}
				cs := storeRun(t, s, run)
				if _, ok, _ := s.DeltaOf(cs[0].Chunks[1].Hash); !ok {
					t.Fatal("the oldest version's tensor is not a delta")
				}
				if _, ok, _ := s.DeltaOf(cs[2].Chunks[1].Hash); ok {
					t.Fatal("the newest version's tensor is a delta")
				}
				gone := map[int]bool{}
				for _, v := range order {
					if err := s.ns.Remove(meta.RootIno, fmt.Sprintf("v%d", v), false); err != nil {
						t.Fatal(err)
					}
					gone[v] = true
					if offline {
						if _, err := s.GC(); err != nil {
							t.Fatal(err)
						}
					} else {
						reclaimAll(t, s)
					}
					for i, c := range cs {
						if gone[i] {
							continue
						}
						got, err := readVerified(s, c)
						if err != nil || !bytes.Equal(got, run[i]) {
							t.Fatalf("after removing %v, version %d: %v", order, i, err)
						}
					}
					if p, err := s.DeltaProblems(); err != nil || len(p) > 0 {
						t.Fatalf("after removing %v: %v %v", order, p, err)
					}
				}
				if offline {
					if _, err := s.GC(); err != nil { // the references the last sweep freed
						t.Fatal(err)
					}
				}
				n := 0
				s.ScanChunks(func(chunk.Hash, pack.Loc, error) error { n++; return nil })
				if n != 0 {
					t.Errorf("%d chunks left when no file names any", n)
				}
				if packs, _ := s.Packs(); len(packs) > 1 {
					t.Errorf("%d packs left", len(packs))
				}
			})
		}
	}
}

// Versions removed together, each a delta against the next, go in the
// same pass: under load, passes come seconds apart and rotations pile up
// between them, and a pass that freed one link of a chain each left the
// rest until the next change, which a finished training run never makes.
func TestChainRemovedWholeGoesInOnePass(t *testing.T) {
	s := openReclaiming(t)
	run := layouttest.TrainingRun(1, 4, 2, 40_000, 1e-4)
	cs := storeRun(t, s, run)
	for _, v := range []string{"v0", "v1", "v2"} {
		if err := s.ns.Remove(meta.RootIno, v, false); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 { // past the passes that keep what was touched lately
		if res := pass(t, s); res.Chunks > 0 {
			break
		}
	}
	newest := map[chunk.Hash]bool{}
	for _, c := range cs[3].Chunks {
		newest[c.Hash] = true
	}
	var left []chunk.Hash
	s.ScanChunks(func(h chunk.Hash, _ pack.Loc, _ error) error {
		if !newest[h] {
			left = append(left, h)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("%d chunks of the removed versions left after the pass that freed the rest", len(left))
	}
	if got, err := readVerified(s, cs[3]); err != nil || !bytes.Equal(got, run[3]) {
		t.Fatalf("the newest version: %v", err)
	}
}

// damage flips the last byte of chunk h's value in its pack.
func damage(t *testing.T, s *Store, h chunk.Hash) {
	t.Helper()
	loc, err := s.index.Get(h)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(s.packs.Path(loc.Pack), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	at := loc.Offset + pack.RecordHeader + int64(loc.Len) - 1
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// A damaged reference makes exactly the chunks stored as deltas against
// it fail, as readers and fsck read them, and no read returns wrong bytes.
func TestDamagedReferenceFailsItsDependentsOnly(t *testing.T) {
	run := layouttest.TrainingRun(1, 2, 3, 40_000, 1e-4)
	s := openOffline(t)
	cs := storeRun(t, s, run)
	hurt := cs[1].Chunks[2].Hash
	damage(t, s, hurt)
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for v, c := range cs {
		for i, ref := range c.Chunks {
			want := ref.Hash == hurt
			if r, ok, _ := s.DeltaOf(ref.Hash); ok && r == hurt {
				want = true
			}
			for _, read := range []func() ([]byte, error){
				func() ([]byte, error) { return s.ReadLocal(ref.Hash) },
				func() ([]byte, error) { return s.loadChunk(context.Background(), ref.Hash, nil) },
			} {
				raw, err := read()
				if want != (err != nil) || err != nil && !errors.Is(err, chunk.ErrCorrupt) {
					t.Errorf("version %d chunk %d: %v, want failure %v", v, i, err, want)
				}
				if err == nil && chunk.Sum(raw) != ref.Hash {
					t.Fatalf("version %d chunk %d: wrong bytes", v, i)
				}
			}
		}
	}
	if _, ok, _ := s.DeltaOf(cs[0].Chunks[2].Hash); !ok {
		t.Fatal("control: the damaged chunk has no dependent")
	}
}

// putDelta stores raw as chunk h, coded as a delta against ref (whose raw
// bytes are refRaw), straight into a pack and the index, as a damaged or
// hostile store could hold it.
func putDelta(t *testing.T, s *Store, raw []byte, ref chunk.Hash, refRaw []byte) chunk.Hash {
	t.Helper()
	h := chunk.Sum(raw)
	v, _ := s.codecs.EncodeDelta(nil, raw, ref, refRaw, "BF16")
	if _, ok := chunk.DeltaReference(v); !ok {
		t.Fatal("not coded as a delta")
	}
	if err := s.storeValue(h, v, false); err != nil {
		t.Fatal(err)
	}
	return h
}

// A chain longer than chunk.MaxChain, or a loop of deltas, is refused as damage
// at the bound, and never waits for itself; one chunk.MaxChain long reads.
func TestChainsAreBounded(t *testing.T) {
	run := layouttest.TrainingRun(1, chunk.MaxChain+3, 1, 20_000, 1e-4)
	tensor := func(v int) []byte { return run[v][len(run[v])-40_000:] }
	s := openOffline(t)
	base, err := s.PutChunk(tensor(0), "BF16")
	if err != nil {
		t.Fatal(err)
	}
	chain := []chunk.Hash{base.Hash}
	for v := 1; v <= chunk.MaxChain+1; v++ {
		chain = append(chain, putDelta(t, s, tensor(v), chain[v-1], tensor(v-1)))
	}
	for v, h := range chain {
		raw, err := s.ReadLocal(h)
		if v <= chunk.MaxChain && (err != nil || !bytes.Equal(raw, tensor(v))) {
			t.Errorf("%d deltas deep: %v", v, err)
		}
		if v > chunk.MaxChain && !errors.Is(err, chunk.ErrCorrupt) {
			t.Errorf("%d deltas deep: %v, want ErrCorrupt", v, err)
		}
	}
	// A loop: a against b, b against a.
	a, b := tensor(chunk.MaxChain+1), tensor(chunk.MaxChain+2)
	ha, hb := chunk.Sum(a), chunk.Sum(b)
	putDelta(t, s, a, hb, b)
	putDelta(t, s, b, ha, a)
	done := make(chan error, 1)
	go func() {
		_, err := s.chunks.Get(context.Background(), ha)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, chunk.ErrCorrupt) {
			t.Errorf("a loop of deltas read: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a read of a loop of deltas waits for itself")
	}
	if _, err := s.ReadLocal(hb); !errors.Is(err, chunk.ErrCorrupt) {
		t.Errorf("a loop of deltas verified: %v", err)
	}
}

// StoreAsDeltas keeps chains chunk.MaxChain deep at most however many versions
// come, so a run of more versions keeps some whole; every version reads
// back. It leaves alone a chunk no record names, and every chunk of a
// store in front of a bucket.
func TestStoreAsDeltasBoundsChains(t *testing.T) {
	run := layouttest.TrainingRun(1, chunk.MaxChain+3, 1, 20_000, 1e-4)
	s := openReclaiming(t)
	cs := storeRun(t, s, run)
	whole := 0
	for v, c := range cs {
		h := c.Chunks[1].Hash
		depth := 0
		for ref, ok, _ := s.DeltaOf(h); ok; ref, ok, _ = s.DeltaOf(ref) {
			depth++
		}
		if depth == 0 {
			whole++
		}
		if depth > chunk.MaxChain {
			t.Errorf("version %d is %d deltas deep", v, depth)
		}
		if got, err := readVerified(s, c); err != nil || !bytes.Equal(got, run[v]) {
			t.Errorf("version %d: %v", v, err)
		}
	}
	if whole != 2 {
		t.Errorf("%d of %d versions whole, want 2", whole, len(cs))
	}

	extra := layouttest.TrainingRun(1, 2, 1, 20_000, 2e-4)
	unnamed, _ := s.PutChunk(extra[0][len(extra[0])-40_000:], "BF16")
	named := addFile(t, s, "named", extra[1])
	pass(t, s) // counts the references
	res, err := s.StoreAsDeltas(context.Background(), []DeltaPair{{Chunk: unnamed.Hash, Ref: named.Chunks[1].Hash}})
	if err != nil || res.Stored != 0 {
		t.Errorf("a chunk no record names was stored as a delta: %+v %v", res, err)
	}
	s.cachesBucket.Store(true)
	if res, err := s.StoreAsDeltas(context.Background(), pairs(cs[len(cs)-2], named)); err != nil || res.Stored != 0 {
		t.Errorf("a store in front of a bucket stored deltas: %+v %v", res, err)
	}
}

// A chunk a pack rewrite moves while it is encoded is encoded again from
// where it went: a reclaim pass rewrites the packs a round of deltas left
// garbage in while the next version is encoded.
func TestDeltasOfChunksMovedMeanwhile(t *testing.T) {
	run := layouttest.TrainingRun(1, 2, 3, 40_000, 1e-4)
	s := openOffline(t)
	older := addFile(t, s, "v0", run[0])
	newer := addFile(t, s, "v1", run[1])
	ps := pairs(older, newer)
	h := ps[1].Chunk
	s.beforeRebase = func() {
		s.beforeRebase = nil
		val, from, err := s.storedValue(h)
		if err != nil {
			t.Fatal(err)
		}
		to, err := s.packs.Append(h, val)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.index.Move([]meta.Move{{Hash: h, From: from, To: to}}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.StoreAsDeltas(context.Background(), ps)
	if err != nil || res.Stored != len(ps) {
		t.Fatalf("stored %d of %d pairs as deltas: %v", res.Stored, len(ps), err)
	}
	if _, ok, _ := s.DeltaOf(h); !ok {
		t.Fatal("the chunk moved meanwhile is not a delta")
	}
	if s.beforeRebase != nil {
		t.Fatal("control: nothing moved")
	}
	for v, c := range []*meta.Content{older, newer} {
		if got, err := readVerified(s, c); err != nil || !bytes.Equal(got, run[v]) {
			t.Fatalf("version %d: %v", v, err)
		}
	}
}

// A delta goes to a bucket coded alone: the value StoredValue gives
// decodes without any other chunk.
func TestDeltaGoesToABucketWhole(t *testing.T) {
	run := layouttest.TrainingRun(1, 2, 1, 40_000, 1e-4)
	s := openOffline(t)
	cs := storeRun(t, s, run)
	h := cs[0].Chunks[1].Hash
	if _, ok, _ := s.DeltaOf(h); !ok {
		t.Fatal("control: not a delta")
	}
	for _, decode := range []bool{false, true} {
		v, err := s.StoredValue(h, decode)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := chunk.DeltaReference(v); ok {
			t.Fatal("a delta value would go to the bucket")
		}
		if raw, err := s.codecs.Decode(h, v); err != nil || chunk.Sum(raw) != h {
			t.Fatalf("the value does not decode alone: %v", err)
		}
	}
	if _, err := s.AddFetched(chunk.Ref{Hash: h}, mustStored(t, s, h)); !errors.Is(err, chunk.ErrCorrupt) {
		t.Errorf("a delta fetched from a bucket was taken: %v", err)
	}
}

func mustStored(t *testing.T, s *Store, h chunk.Hash) []byte {
	t.Helper()
	v, _, err := s.storedValue(h)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// BenchmarkStoreAsDeltas is the background encoder's work for one version:
// read the older version's chunks and the newer's, encode, verify, append
// and index the deltas. MB/s are of the older version's raw bytes.
func BenchmarkStoreAsDeltas(b *testing.B) {
	run := layouttest.TrainingRun(1, 2, 16, 500_000, 1e-4)
	for range b.N {
		b.StopTimer()
		s := openOfflineB(b)
		older := addFile(b, s, "older", run[0])
		newer := addFile(b, s, "newer", run[1])
		b.SetBytes(older.Size)
		b.StartTimer()
		if res, err := s.StoreAsDeltas(context.Background(), pairs(older, newer)); err != nil || res.Stored != 16 {
			b.Fatal(res, err)
		}
	}
}

func openOfflineB(b *testing.B) *Store {
	s, err := Open(b.TempDir(), Options{CacheBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}
