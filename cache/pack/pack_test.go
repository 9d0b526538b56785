package pack

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// openSet opens a pack set in a temporary folder, closed after the test.
func openSet(t *testing.T) *Set {
	t.Helper()
	p, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// A failed append seals its pack: the next record goes to a new pack, so
// nothing in use ever follows the hole.
func TestFailedAppendSealsPack(t *testing.T) {
	p := openSet(t)
	first, err := p.Append(chunk.Sum([]byte("a")), []byte("value a"))
	if err != nil {
		t.Fatal(err)
	}
	readOnly, err := os.Open(p.Path(first.Pack))
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.cur, p.files[first.Pack] = readOnly, readOnly // the next write fails
	p.mu.Unlock()
	if _, err := p.Append(chunk.Sum([]byte("b")), []byte("value b")); err == nil {
		t.Fatal("a write to a read-only pack succeeded")
	}
	next, err := p.Append(chunk.Sum([]byte("c")), []byte("value c"))
	if err != nil {
		t.Fatal(err)
	}
	if next.Pack == first.Pack {
		t.Fatalf("appended to pack %d after a failed write to it", first.Pack)
	}
}

// A record is read back only through a location that points at it.
func TestReadChecksTheRecord(t *testing.T) {
	p := openSet(t)
	h := chunk.Sum([]byte("a"))
	loc, err := p.Append(h, []byte("value a"))
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := p.Read(h, loc, func(v []byte) error { got = string(v); return nil }); err != nil || got != "value a" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := p.Read(chunk.Sum([]byte("b")), loc, func([]byte) error { return nil }); err == nil {
		t.Fatal("a location read as another chunk's record")
	}
	if l, err := DecodeLoc(loc.Encode()); err != nil || l != loc {
		t.Fatalf("location round trip: %+v %v", l, err)
	}
}

// A Sync that starts while another is writing back returns only once what
// was dirty at its start is durable, although the first took it.
func TestConcurrentSyncWaitsForTheWriteback(t *testing.T) {
	p := openSet(t)
	if _, err := p.Append(chunk.Sum([]byte("a")), []byte("value a")); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	p.beforeSync = func(*os.File) { close(held); <-release; p.beforeSync = nil }
	first := make(chan error)
	go func() { first <- p.Sync() }()
	<-held // the first sync took the dirty pack and writes it back
	second := make(chan error)
	go func() { second <- p.Sync() }()
	select {
	case err := <-second:
		t.Fatalf("a second sync returned (%v) while the pack it found dirty was still being written back", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

// A Sync while a record is being written leaves its pack dirty: the sync
// the appender makes after Append returns writes the record back.
func TestSyncDuringAppendLeavesThePackDirty(t *testing.T) {
	p := openSet(t)
	p.beforeWrite = func() {
		p.beforeWrite = nil
		if err := p.Sync(); err != nil {
			t.Error(err)
		}
	}
	if _, err := p.Append(chunk.Sum([]byte("a")), []byte("value a")); err != nil {
		t.Fatal(err)
	}
	synced := 0
	p.beforeSync = func(*os.File) { synced++ }
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if synced != 1 {
		t.Fatalf("the sync after an append wrote back %d packs, want its pack", synced)
	}
}

// A pack removed while a Sync writes it back (evicted to a bucket, or
// dropped by reclaim) needs no writeback: the Sync succeeds, and so do the
// next. It failed for good with "file already closed", and every later
// commit of the mount with it.
func TestPackRemovedDuringSyncLeavesSyncSound(t *testing.T) {
	p := openSet(t)
	loc, err := p.Append(chunk.Sum([]byte("a")), []byte("value a"))
	if err != nil {
		t.Fatal(err)
	}
	p.Seal()
	p.beforeSync = func(*os.File) {
		p.beforeSync = nil
		if err := p.Remove(loc.Pack); err != nil {
			t.Error(err)
		}
	}
	if err := p.Sync(); err != nil {
		t.Fatalf("sync of a pack removed meanwhile: %v", err)
	}
	if _, err := p.Append(chunk.Sum([]byte("b")), []byte("value b")); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(); err != nil {
		t.Fatalf("the sync after: %v", err)
	}
}

// Once a pack's writeback failed, no later Sync reports success: the
// kernel would not report the lost bytes again.
func TestFailedSyncIsSticky(t *testing.T) {
	p := openSet(t)
	loc, err := p.Append(chunk.Sum([]byte("a")), []byte("value a"))
	if err != nil {
		t.Fatal(err)
	}
	broken, err := os.Open(p.Path(loc.Pack))
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // its sync fails
	p.mu.Lock()
	p.dirty[loc.Pack], p.files[loc.Pack] = broken, broken
	p.mu.Unlock()
	if err := p.Sync(); err == nil {
		t.Fatal("a failed writeback reported success")
	}
	if err := p.Sync(); err == nil {
		t.Fatal("the sync after a failed writeback reported success")
	}
	next, err := p.Append(chunk.Sum([]byte("b")), []byte("value b"))
	if err != nil {
		t.Fatal(err)
	}
	if next.Pack == loc.Pack {
		t.Fatal("appended to the pack whose writeback failed")
	}
}

// A record the pack file does not hold whole (a crash cut the file) reads
// as corrupt, so the store refetches or re-stores it, never as EOF.
func TestShortRecordIsCorrupt(t *testing.T) {
	p := openSet(t)
	h := chunk.Sum([]byte("a"))
	loc, err := p.Append(h, []byte("value a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p.Path(loc.Pack), loc.Offset+RecordHeader+2); err != nil {
		t.Fatal(err)
	}
	err = p.Read(h, loc, func([]byte) error { return nil })
	if !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("short record: %v, want ErrCorrupt", err)
	}
}
