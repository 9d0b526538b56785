package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// random is n bytes from a seeded generator, as storetest.Random, which
// the store's own tests cannot import: storetest imports the store.
func random(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// packBytes is the size of the store's pack files.
func packBytes(t *testing.T, s *Store) int64 {
	t.Helper()
	entries, err := os.ReadDir(s.packs.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		info, err := e.Info()
		switch {
		case errors.Is(err, fs.ErrNotExist): // evicted meanwhile
		case err != nil:
			t.Fatal(err)
		case info.Mode().IsRegular():
			n += info.Size()
		}
	}
	return n
}

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readAll(t *testing.T, s *Store, c *meta.Content) []byte {
	t.Helper()
	out := make([]byte, c.Size)
	n, err := s.NewReader("test", c).ReadAt(out, 0)
	if err != nil && err != io.EOF || int64(n) != c.Size {
		t.Fatalf("read %d of %d: %v", n, c.Size, err)
	}
	return out
}

func TestPutGetDedup(t *testing.T) {
	s := openTemp(t)
	data := random(1, 3<<20)
	a, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, s, a), data) {
		t.Fatal("content differs")
	}
	if len(a.Chunks) != len(b.Chunks) {
		t.Fatal("same bytes chunked differently")
	}
	var chunks int
	s.ScanChunks(func(chunk.Hash, pack.Loc, error) error { chunks++; return nil })
	if chunks != len(a.Chunks) {
		t.Fatalf("%d chunks stored for %d distinct", chunks, len(a.Chunks))
	}
}

func TestZerosCompress(t *testing.T) {
	s := openTemp(t)
	dir, _ := s.ns.Create(meta.RootIno, "z", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	c, _, err := s.Ingest(bytes.NewReader(make([]byte, 10<<20)))
	if err != nil {
		t.Fatal(err)
	}
	f, _ := s.ns.Create(dir.Ino, "zeros", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	s.ns.Update(f.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	st, err := s.Stats(dir.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if st.Logical != 10<<20 || st.Stored*100 > st.Logical {
		t.Fatalf("stats %+v", st)
	}
}

// safetensorsBytes builds a two-tensor file by hand.
func safetensorsBytes(a, b []byte) []byte {
	js := []byte(`{"a":{"dtype":"U8","shape":[` + strconv.Itoa(len(a)) + `],"data_offsets":[0,` + strconv.Itoa(len(a)) + `]},` +
		`"b":{"dtype":"U8","shape":[` + strconv.Itoa(len(b)) + `],"data_offsets":[` + strconv.Itoa(len(a)) + `,` + strconv.Itoa(len(a)+len(b)) + `]}}`)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	out = append(out, js...)
	out = append(out, a...)
	return append(out, b...)
}

func TestSafetensorsSplitAtTensors(t *testing.T) {
	s := openTemp(t)
	a, b := random(2, 5<<20+3), random(3, 1000)
	c1, _, err := s.Ingest(bytes.NewReader(safetensorsBytes(a, b)))
	if err != nil {
		t.Fatal(err)
	}
	if c1.Kind != meta.KindSafetensors {
		t.Fatal("not recognized as safetensors")
	}
	// the header, a in chunk.MaxSize pieces, b
	pieces := (len(a) + chunk.MaxSize - 1) / chunk.MaxSize
	if len(c1.Chunks) != 1+pieces+1 || c1.Chunks[1].Len != chunk.MaxSize {
		t.Fatalf("chunks %+v", c1.Chunks)
	}
	// The same tensors in the other order share their chunks.
	c2, _, err := s.Ingest(bytes.NewReader(safetensorsBytes(b, a)))
	if err != nil {
		t.Fatal(err)
	}
	shared := 0
	for _, x := range c1.Chunks {
		for _, y := range c2.Chunks {
			if x.Hash == y.Hash {
				shared++
			}
		}
	}
	if shared != pieces+1 {
		t.Fatalf("%d chunks shared, want %d", shared, pieces+1)
	}
	if !bytes.Equal(readAll(t, s, c2), safetensorsBytes(b, a)) {
		t.Fatal("content differs")
	}
}

func TestTruncatedAndMalformedRoundTrip(t *testing.T) {
	s := openTemp(t)
	full := safetensorsBytes(random(4, 3000), random(5, 10))
	inputs := [][]byte{
		full[:5], full[:20], full[:len(full)-7], append(full, 1, 2, 3),
		append(binary.LittleEndian.AppendUint64(nil, 40), []byte("{not json at all, but long enough ......}xyz")...),
		{}, []byte("x"),
	}
	for i, in := range inputs {
		c, _, err := s.Ingest(bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, s, c), in) {
			t.Fatalf("input %d does not round-trip", i)
		}
	}
}

func TestCorruptionDetected(t *testing.T) {
	s := openTemp(t)
	data := random(6, 100000)
	c, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	h := c.Chunks[0].Hash
	// Flip a payload byte of the stored value in its pack.
	loc, err := s.index.Get(h)
	if err != nil {
		t.Fatal(err)
	}
	packFile, err := os.OpenFile(s.packs.Path(loc.Pack), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := loc.Offset + pack.RecordHeader + int64(loc.Len)/2
	packFile.ReadAt(b, off)
	packFile.WriteAt([]byte{b[0] ^ 0x40}, off)
	packFile.Close()
	_, err = s.NewReader("f", c).ReadAt(make([]byte, 10), 0)
	if !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("read of corrupted chunk: %v", err)
	}
}

func TestGCFreesOnlyUnreferenced(t *testing.T) {
	s := openTemp(t)
	keep, _, _ := s.Ingest(bytes.NewReader(random(7, 2<<20)))
	drop, _, _ := s.Ingest(bytes.NewReader(random(8, 2<<20)))
	f, _ := s.ns.Create(meta.RootIno, "keep", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	s.ns.Update(f.Ino, func(in *meta.Inode) error { in.Content = *keep; return nil })
	g, _ := s.ns.Create(meta.RootIno, "drop", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	s.ns.Update(g.Ino, func(in *meta.Inode) error { in.Content = *drop; return nil })
	if err := s.ns.Remove(meta.RootIno, "drop", false); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC()
	if err != nil {
		t.Fatal(err)
	}
	if res.Chunks != int64(len(drop.Chunks)) {
		t.Fatalf("gc freed %d chunks, want %d", res.Chunks, len(drop.Chunks))
	}
	// Both files shared one pack, half garbage now: it is rewritten.
	if res.PacksRewritten != 1 || res.PacksRemoved != 1 || res.PackBytesFreed < 2<<20 {
		t.Fatalf("gc packs: %+v", res)
	}
	if size := packBytes(t, s); size > 2<<20+4096 {
		t.Fatalf("packs take %d bytes after gc, want about 2 MiB", size)
	}
	in, err := s.ns.Lookup(meta.RootIno, "keep")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, s, &in.Content), random(7, 2<<20)) {
		t.Fatal("kept file damaged by gc")
	}
}

// Packs roll over at their target size; gc deletes the ones left empty.
func TestPacksRollAndEmptyOnesGo(t *testing.T) {
	s := openTemp(t)
	data := random(11, 5<<20)
	c, ids := fileInSmallPacks(t, s, data)
	if len(ids) < 5 {
		t.Fatalf("%d packs for 5 MiB at 1 MiB each", len(ids))
	}
	if !bytes.Equal(readAll(t, s, c), data) {
		t.Fatal("read back differs")
	}
	if err := s.ns.Remove(meta.RootIno, "f", false); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC()
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksRemoved != len(ids) || res.PacksRewritten != 0 {
		t.Fatalf("gc of %d packs with nothing live: %+v", len(ids), res)
	}
	if size := packBytes(t, s); size != 0 {
		t.Fatalf("packs take %d bytes with nothing stored", size)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	data := random(9, 1<<20)
	c, _, _ := s.Ingest(bytes.NewReader(data))
	d, _ := s.ns.Create(meta.RootIno, "ck", meta.Inode{Mode: syscall.S_IFDIR | 0o755, Mtime: time.Now().UnixNano()})
	f, _ := s.ns.Create(d.Ino, "w.bin", meta.Inode{Mode: syscall.S_IFREG | 0o600, Uid: 7})
	s.ns.Update(f.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in, err := s.ns.Resolve("ck/w.bin")
	if err != nil {
		t.Fatal(err)
	}
	if in.Mode != syscall.S_IFREG|0o600 || in.Uid != 7 || !bytes.Equal(readAll(t, s, &in.Content), data) {
		t.Fatalf("after reopen: %+v", in)
	}
}

func TestNamespaceRules(t *testing.T) {
	s := openTemp(t)
	d, _ := s.ns.Create(meta.RootIno, "d", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	s.ns.Create(d.Ino, "f", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	g, _ := s.ns.Create(d.Ino, "g", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	if _, err := s.ns.Create(d.Ino, "f", meta.Inode{Mode: syscall.S_IFREG}); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("create over existing: %v", err)
	}
	if err := s.ns.Remove(meta.RootIno, "d", true); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir non-empty: %v", err)
	}
	if err := s.ns.Rename(d.Ino, "g", d.Ino, "f", 0); err != nil {
		t.Fatal(err)
	}
	if in, err := s.ns.Lookup(d.Ino, "f"); err != nil || in.Ino != g.Ino {
		t.Fatalf("rename over: %v %v", in, err)
	}
	if err := s.ns.Rename(d.Ino, "f", meta.RootIno, "d", 0); !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("file over dir: %v", err)
	}
	entries, _ := s.ns.ReadDir(d.Ino)
	if len(entries) != 1 || entries[0].Name != "f" {
		t.Fatalf("entries %+v", entries)
	}
}

// TestEvictionDropsOnlyUploadedPacks: eviction deletes the packs whose live
// chunks the bucket holds, and no other.
func TestEvictionDropsOnlyUploadedPacks(t *testing.T) {
	s := openTemp(t)
	c, ids := fileInSmallPacks(t, s, random(12, 6<<20))
	if len(ids) < 4 {
		t.Fatalf("%d packs for 6 MiB at 1 MiB each", len(ids))
	}
	// The bucket holds the chunks of every pack but the second.
	inPack := map[uint32][]chunk.Hash{}
	for _, id := range ids {
		recs, err := s.index.InPack(id)
		if err != nil {
			t.Fatal(err)
		}
		var hs []chunk.Hash
		for _, r := range recs {
			hs = append(hs, r.Hash)
		}
		inPack[id] = hs
		for _, h := range hs {
			if id != ids[1] {
				if err := s.MarkUploaded(h); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	var listed int
	for _, hs := range inPack {
		listed += len(hs)
	}
	if listed != len(c.Chunks) {
		t.Fatalf("the index places %d chunks in packs, the file has %d", listed, len(c.Chunks))
	}
	evictAll(t, s)
	left, _ := s.packs.List()
	cur, appending := s.packs.Current()
	for _, id := range left {
		if id != ids[1] && !(appending && id == cur) {
			t.Fatalf("pack %d of uploaded chunks left after eviction: %v", id, left)
		}
	}
	if _, err := s.index.Get(inPack[ids[0]][0]); !errors.Is(err, meta.ErrNoChunk) {
		t.Fatalf("evicted chunk still indexed: %v", err)
	}
	if _, err := s.index.Get(inPack[ids[1]][0]); err != nil {
		t.Fatalf("pinned chunk lost: %v", err)
	}
}

// Eviction waits for a reclaim pass (or a Frozen check) under way: a
// pass's copies of records sit in a new pack before the index lists them
// there, and an eviction meanwhile found that pack empty and dropped it
// (the copies' chunks then lost, had they not been uploaded).
func TestEvictionWaitsForAReclaimPass(t *testing.T) {
	s := openReclaiming(t)
	_, ids := fileInSmallPacks(t, s, random(3, 3<<20))
	held, release := make(chan struct{}), make(chan struct{})
	go s.Frozen(func(*meta.Namespace) error { close(held); <-release; return nil })
	<-held
	evicted := make(chan error, 1)
	go func() {
		_, err := s.EvictPack(ids[0], func(chunk.Hash) bool { return true })
		evicted <- err
	}()
	select {
	case err := <-evicted:
		t.Fatalf("an eviction ran while a pass held the store: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-evicted; err != nil {
		t.Fatal(err)
	}
}

// evictAll evicts every sealed pack whose live chunks the bucket holds.
func evictAll(t *testing.T, s *Store) {
	t.Helper()
	packs, err := s.Packs()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packs {
		if p.Appending {
			continue
		}
		if _, err := s.EvictPack(p.ID, s.Uploaded); err != nil {
			t.Fatal(err)
		}
	}
}

// fileInSmallPacks stores data as file "f" in packs of 1 MiB and returns its
// content and the packs.
func fileInSmallPacks(t *testing.T, s *Store, data []byte) (*meta.Content, []uint32) {
	t.Helper()
	s.packs.SetTarget(1 << 20)
	c, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	f, _ := s.ns.Create(meta.RootIno, "f", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	s.ns.Update(f.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	ids, _ := s.packs.List()
	return c, ids
}

// Writes far from the disk's limit are let through on the last reading
// of the free space, read again at most once a second; near the limit
// every write reads it.
func TestFreeSpaceIsReadOncePerSecond(t *testing.T) {
	s := openTemp(t)
	if err := s.EnsureSpace(1<<20, ChunkReserve, false); err != nil {
		t.Fatal(err)
	}
	read := s.space.at
	for range 1000 {
		if err := s.EnsureSpace(1<<20, ChunkReserve, true); err != nil {
			t.Fatal(err)
		}
	}
	if s.space.at != read {
		t.Fatal("the free space was read again within a second of plenty")
	}
	free, err := s.freeBytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureSpace(free-ChunkReserve-1<<20, ChunkReserve, false); err != nil {
		t.Fatal(err)
	}
	read = s.space.at
	time.Sleep(time.Millisecond)
	if err := s.EnsureSpace(2<<20, ChunkReserve, false); err != nil {
		t.Fatal(err)
	}
	if s.space.at == read {
		t.Fatal("a write near the limit, by what was granted, was let through without reading the free space")
	}
}
