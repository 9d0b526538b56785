package store

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// Writers storing the same new chunk at once append it once.
func TestRacingPutsAppendOnce(t *testing.T) {
	s := openTemp(t)
	raw := random(4, 500_000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.PutChunk(raw, ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	id, _ := s.packs.Current()
	loc, err := s.index.Get(chunk.Sum(raw))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(s.packs.Path(id))
	if want := pack.RecordHeader + int64(loc.Len); st.Size() != want {
		t.Fatalf("pack of %d bytes after 8 racing puts of one chunk, one record is %d", st.Size(), want)
	}
}

// Eviction decides from the index: a pack whose bytes a record walk would
// misread (here its first header zeroed) still pins its chunks that the
// bucket lacks.
func TestEvictionReadsTheIndexNotThePack(t *testing.T) {
	s := openTemp(t)
	_, ids := fileInSmallPacks(t, s, random(5, 3<<20))
	s.packs.Seal()
	f, err := os.OpenFile(s.packs.Path(ids[0]), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, pack.RecordHeader), 0)
	f.Close()
	evictAll(t, s)
	if _, err := os.Stat(s.packs.Path(ids[0])); err != nil {
		t.Fatalf("a pack of chunks the bucket lacks was evicted: %v", err)
	}
}

// An I/O error reading a pack stays an I/O error, not a verification
// failure (which in front of a bucket would fetch the chunk again).
func TestIOErrorIsNotCorruption(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := s.PutChunk(random(6, 1000), "")
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := s.index.Get(ref.Hash)
	path := s.packs.Path(loc.Pack)
	s.Close()
	// A folder where the pack was: it opens, and every read fails (EISDIR).
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(path, 0o700)
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.ReadLocal(ref.Hash)
	if err == nil || errors.Is(err, chunk.ErrCorrupt) || !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("read of an unreadable pack: %v, want an I/O error that is not ErrCorrupt", err)
	}
}

// A manifest whose chunk lengths lie (as one from a bucket may) reads as
// corrupt, never as bytes at the wrong offsets or a panic.
func TestLyingChunkLengthIsCorrupt(t *testing.T) {
	s := openTemp(t)
	ref, err := s.PutChunk(random(7, 1000), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, lie := range []uint32{999, 5000} {
		c := &meta.Content{Size: int64(lie), Chunks: []chunk.Ref{{Hash: ref.Hash, Len: lie}}}
		if _, err := s.NewReader("f", c).ReadAt(make([]byte, lie), 0); !errors.Is(err, chunk.ErrCorrupt) {
			t.Errorf("length %d for a 1000-byte chunk: %v", lie, err)
		}
	}
}
