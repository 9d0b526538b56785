package store

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/reclaim"
)

// openReclaiming opens a store that reclaims while in use, with packs of
// 1 MiB and generations that turn at every pass; the test runs the passes.
func openReclaiming(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{CacheBytes: 8 << 20, ReclaimEvery: time.Hour, touchedFor: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.packs.SetTarget(1 << 20)
	return s
}

func addFile(t testing.TB, s *Store, name string, data []byte) *meta.Content {
	t.Helper()
	c, release, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := s.ns.Create(meta.RootIno, name, meta.Inode{Mode: syscall.S_IFREG | 0o644, Content: *c}); err != nil {
		t.Fatal(err)
	}
	return c
}

func pass(t *testing.T, s *Store) *reclaim.Result {
	t.Helper()
	res, err := s.Reclaim()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A removed file's chunks are freed by the second pass after they were
// last touched, their packs deleted or rewritten, while a reader of the
// file kept reads on; a file an open handle still pins is kept until it
// is let go.
func TestReclaimWhileInUse(t *testing.T) {
	s := openReclaiming(t)
	keepData := random(1, 3<<20)
	keep := addFile(t, s, "keep", keepData)
	drop := addFile(t, s, "drop", random(2, 3<<20))
	held := addFile(t, s, "held", random(3, 2<<20))
	unpin := s.Pin(held)
	for _, name := range []string{"drop", "held"} {
		if err := s.ns.Remove(meta.RootIno, name, false); err != nil {
			t.Fatal(err)
		}
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a reader of the kept file all along
		defer wg.Done()
		for !stop.Load() {
			got := make([]byte, len(keepData))
			if _, err := s.NewReader("keep", keep).ReadAt(got, 0); err != nil || !bytes.Equal(got, keepData) {
				t.Errorf("read during reclaim: %v", err)
				return
			}
		}
	}()
	if res := pass(t, s); res.Chunks != 0 {
		t.Fatalf("the first pass freed %d chunks written since the one before", res.Chunks)
	}
	res := pass(t, s)
	if res.Chunks != int64(len(drop.Chunks)) || res.PacksRemoved == 0 {
		t.Fatalf("second pass: %+v, want the %d chunks of the removed file", res, len(drop.Chunks))
	}
	if got := readAll(t, s, held); !bytes.Equal(got, random(3, 2<<20)) {
		t.Fatal("a pinned file was damaged")
	}
	unpin()
	pass(t, s)
	if res := pass(t, s); res.Chunks != int64(len(held.Chunks)) {
		t.Fatalf("after unpinning: %+v, want the %d chunks of the held file", res, len(held.Chunks))
	}
	stop.Store(true)
	wg.Wait()
	if got := readAll(t, s, keep); !bytes.Equal(got, keepData) {
		t.Fatal("the kept file was damaged")
	}
	if size := packBytes(t, s); size > 5<<20 {
		t.Fatalf("packs take %d bytes for a 3 MiB file", size)
	}
}

// Chunks of an ingest still running are kept by every pass, and so is its
// content between its end and its commit, however many passes run in
// between (a commit may wait for space to be made, or for a bucket).
func TestReclaimKeepsAnIngestInFlight(t *testing.T) {
	s := openReclaiming(t)
	data := random(4, 6<<20)
	pr, pw := io.Pipe()
	type ingested struct {
		c       *meta.Content
		release func()
		err     error
	}
	done := make(chan ingested)
	go func() {
		c, release, err := s.Ingest(pr)
		done <- ingested{c, release, err}
	}()
	if _, err := pw.Write(data[:4<<20]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the pipeline store what it has
	for range 3 {
		if res := pass(t, s); res.Chunks != 0 {
			t.Fatalf("a pass freed %d chunks of an ingest in flight", res.Chunks)
		}
	}
	pw.Write(data[4<<20:])
	pw.Close()
	in := <-done
	c, release, err := in.c, in.release, in.err
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if res := pass(t, s); res.Chunks != 0 {
			t.Fatalf("a pass between an ingest's end and its commit freed %d chunks", res.Chunks)
		}
	}
	if _, err := s.ns.Create(meta.RootIno, "f", meta.Inode{Mode: syscall.S_IFREG | 0o644, Content: *c}); err != nil {
		t.Fatal(err)
	}
	release()
	pass(t, s)
	pass(t, s)
	if got := readAll(t, s, c); !bytes.Equal(got, data) {
		t.Fatal("the committed file differs")
	}
}

// A pass after the first weighs the chunks that changed, not the store:
// after one file of many is removed, the next pass looks at that file's
// chunks (and those stored since), frees them, and keeps every other.
func TestReclaimWeighsOnlyWhatChanged(t *testing.T) {
	s := openReclaiming(t)
	const files = 200
	for i := range files {
		addFile(t, s, fmt.Sprintf("f%03d", i), random(int64(100+i), 10<<10))
	}
	pass(t, s) // the first pass counts every reference
	pass(t, s)
	gone := addFile(t, s, "gone", random(99, 3<<20))
	pass(t, s)
	pass(t, s)
	if err := s.ns.Remove(meta.RootIno, "gone", false); err != nil {
		t.Fatal(err)
	}
	var freed int64
	for range 3 { // its chunks are recent for two passes
		res := pass(t, s)
		if res.Weighed > int64(len(gone.Chunks)) {
			t.Fatalf("a pass weighed %d chunks after one file of %d chunks went, in a store of %d files", res.Weighed, len(gone.Chunks), files)
		}
		freed += res.Chunks
	}
	if freed != int64(len(gone.Chunks)) {
		t.Fatalf("freed %d chunks of the %d of the file removed", freed, len(gone.Chunks))
	}
	for i := range files {
		in, err := s.ns.Lookup(meta.RootIno, fmt.Sprintf("f%03d", i))
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, &in.Content); !bytes.Equal(got, random(int64(100+i), 10<<10)) {
			t.Fatalf("f%03d changed", i)
		}
	}
}
