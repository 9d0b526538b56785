package store

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// A chunk appended to a pack that another writer's append filled is
// indexed after the pack stopped being the current one: a reclaim pass
// that starts in between must count it among the pack's live records, or
// it deletes the pack under a chunk about to be indexed.
func TestReclaimWaitsForARecordNotIndexedYet(t *testing.T) {
	s := openReclaiming(t)
	s.packs.SetTarget(1) // every record fills its pack
	held, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	s.afterAppend = func() {
		if calls.Add(1) == 1 { // the first append waits; later ones go on
			close(held)
			<-release
		}
	}
	straggler := random(1, 64<<10)
	stored := make(chan error)
	go func() {
		_, err := s.PutChunk(straggler, "")
		stored <- err
	}()
	<-held                                                    // appended, not indexed yet
	if _, err := s.PutChunk(random(2, 100), ""); err != nil { // fills on: another pack
		t.Fatal(err)
	}
	passed := make(chan error)
	go func() { _, err := s.Reclaim(); passed <- err }()
	time.Sleep(200 * time.Millisecond) // a pass that does not wait deletes the pack now
	close(release)
	if err := <-stored; err != nil {
		t.Fatal(err)
	}
	if err := <-passed; err != nil {
		t.Fatal(err)
	}
	h := chunk.Sum(straggler)
	if got, err := s.ReadLocal(h); err != nil || !bytes.Equal(got, straggler) {
		t.Fatalf("the chunk indexed after the pass began reads: %v", err)
	}
}

// A store that was not closed cleanly checks the records of the packs its
// last session wrote before dedup trusts them: a record the crash cut
// short is stored again, and the file that stores it reads back, where
// trusting the index entry would make every later copy unreadable.
func TestDedupChecksRecordsACrashMayHaveCut(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := random(3, 3<<20)
	if _, _, err := s.Ingest(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := s.Abandon(); err != nil {
		t.Fatal(err)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	for _, p := range packs { // the power cut: the tail never reached the disk
		fi, _ := os.Stat(p)
		os.Truncate(p, fi.Size()/2)
	}

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, _, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, c); !bytes.Equal(got, data) {
		t.Fatal("a copy stored after the crash reads differently")
	}
}

// A clean close ends the session: the next open trusts every pack.
func TestCleanCloseLeavesNoSuspects(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Ingest(bytes.NewReader(random(3, 1<<20)))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.suspect) != 0 {
		t.Fatalf("packs suspect after a clean close: %v", s.suspect)
	}
}
