package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/layout/layouttest"
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
	straggler := layouttest.Random(1, 64<<10)
	stored := make(chan error)
	go func() {
		_, err := s.PutChunk(straggler, "")
		stored <- err
	}()
	<-held                                                               // appended, not indexed yet
	if _, err := s.PutChunk(layouttest.Random(2, 100), ""); err != nil { // fills on: another pack
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
	data := layouttest.Random(3, 3<<20)
	if _, _, err := s.Ingest(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	crash(t, s)
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
	s.Ingest(bytes.NewReader(layouttest.Random(3, 1<<20)))
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

// A staged file that cannot be chunked for a fault of its own (cut short)
// is quarantined: the files queued after it settle all the same.
func TestBadStagedFileDoesNotStopSettling(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.settler.stop()
	bad := stageFile(t, s, "bad", layouttest.Random(5, 2<<20))
	good := stageFile(t, s, "good", layouttest.Random(6, 2<<20))
	if err := os.Truncate(s.stagedPath(bad.Content.Staged), 1000); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second pass does not try the bad one again
		if _, err := s.settler.settleAll(nil, 0); err != nil {
			t.Fatalf("one bad staged file stopped settling: %v", err)
		}
	}
	if in, _ := s.ns.GetInode(good.Ino); in.Content.Staged != 0 {
		t.Fatal("the file staged after a bad one was not settled")
	}
	if queued, _ := s.ns.Queued(bad.Content.Staged); !queued {
		t.Fatal("the bad staged file left the queue")
	}
	if s.settler.backlog.Load() != 0 {
		t.Fatalf("backlog %d after settling all that can be", s.settler.backlog.Load())
	}
}

// After a crash, a file closed and never synced whose staged content the
// crash cut short is removed: it reads back whole or not at all, never
// EIO. Files whose staged content is whole stay.
func TestFileCutShortByACrashIsRemoved(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	s.settler.stop()
	if _, err := s.ns.Create(meta.RootIno, "d", meta.Inode{Mode: syscall.S_IFDIR | 0o755}); err != nil {
		t.Fatal(err)
	}
	whole := layouttest.Random(7, 1<<20)
	stageFile(t, s, "whole", whole)
	cut := stageFile(t, s, "cut", layouttest.Random(8, 1<<20))
	if _, err := s.ns.Link(cut.Ino, mustLookup(t, s, "d").Ino, "link"); err != nil {
		t.Fatal(err)
	}
	crash(t, s)
	if err := os.Truncate(filepath.Join(dir, "staged", strconv.FormatUint(cut.Content.Staged, 16)), 4096); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.ns.Lookup(meta.RootIno, "cut"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("a file cut short by a crash is still there: %v", err)
	}
	if _, err := s.ns.Resolve("d/link"); err == nil {
		t.Fatal("a link of a file cut short by a crash is still there")
	}
	in := mustLookup(t, s, "whole")
	if !bytes.Equal(readAll(t, s, &in.Content), whole) {
		t.Fatal("a whole staged file changed")
	}
}

func mustLookup(t *testing.T, s *Store, name string) *meta.Inode {
	t.Helper()
	in, err := s.ns.Lookup(meta.RootIno, name)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// fsck, ls and stat open the store read-only: a store a crash left with
// staged files and an orphan keeps both.
func TestReadOnlyOpenChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	s.settler.stop()
	in := stageFile(t, s, "w", layouttest.Random(9, 1<<20))
	crash(t, s)
	orphan := filepath.Join(dir, "staged", "ffff")
	os.WriteFile(orphan, []byte("orphan"), 0o600)

	ro, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ro.Namespace().Lookup(meta.RootIno, "w")
	if err != nil || got.Content.Staged != in.Content.Staged {
		t.Fatalf("read-only: %+v, %v", got, err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan); err != nil {
		t.Fatal("a read-only open removed a staged file")
	}
	if _, err := Open(filepath.Join(dir, "none"), Options{ReadOnly: true}); err == nil {
		t.Fatal("a read-only open made a store")
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, _ := s.ns.Lookup(meta.RootIno, "w"); got.Content.Staged != 0 {
		t.Fatal("still staged after a read-write open")
	}
}

// A sparse staged file counts what it takes on disk against the room
// kept for settling, not its length: one user's truncate to the size of
// the disk must not deny every other user's writes.
func TestSparseStagedFileTakesNoRoom(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.settler.stop()
	free, err := s.freeBytes()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(s.StagingDir(), "write-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(free); err != nil {
		t.Fatal(err)
	}
	c, err := s.Stage(f, free)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.settler.backlog.Load(); got > 1<<20 {
		t.Fatalf("a sparse file of %d bytes counts %d against the free space", free, got)
	}
	if err := s.EnsureStagingSpace(8<<20, 0); err != nil {
		t.Fatalf("an 8 MiB write refused after another's sparse file: %v", err)
	}
	s.Unstage(c)
	if _, err := os.Stat(s.stagedPath(c.Staged)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("an unstaged file stayed")
	}
}

// Appends to a file whose content is staged go to its staged file in
// place, under a lease the settler respects; the record's bytes never
// change, and a settle after the lease ends takes the longer file.
func TestAppendsToAStagedFileInPlace(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.settler.stop()
	first := layouttest.Random(10, 1<<20)
	in := stageFile(t, s, "log", first)
	before := s.NewReader("log", &in.Content)
	f, release, ok := s.LeaseStaged(&in.Content)
	if !ok {
		t.Fatal("no lease on a staged file")
	}
	more := layouttest.Random(11, 300<<10)
	if _, err := f.WriteAt(more, int64(len(first))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ns.GetInode(in.Ino); got.Content.Staged != in.Content.Staged {
		t.Fatal("a staged file under a lease was settled")
	}
	c := s.Restage(f, &in.Content, int64(len(first)+len(more)))
	in, err = s.ns.Update(in.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	if err != nil {
		t.Fatal(err)
	}
	release()
	all := append(append([]byte(nil), first...), more...)
	if !bytes.Equal(readAll(t, s, &in.Content), all) {
		t.Fatal("the appended file reads differently")
	}
	got := make([]byte, len(first)+10)
	if n, _ := before.ReadAt(got, 0); n != len(first) || !bytes.Equal(got[:n], first) {
		t.Fatalf("a reader of the record before the append read %d bytes", n)
	}
	if _, err := s.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	in, _ = s.ns.GetInode(in.Ino)
	if in.Content.Staged != 0 || !bytes.Equal(readAll(t, s, &in.Content), all) {
		t.Fatalf("settled after the lease: %+v", in.Content)
	}
	if _, _, ok := s.LeaseStaged(&meta.Content{Staged: c.Staged, Size: c.Size}); ok {
		t.Fatal("a lease on a settled staged file")
	}
}

// A staged file's sync that returns waits for what another sync took.
func TestStagedSyncWaitsForTheOtherSync(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.settler.stop()
	stageFile(t, s, "a", layouttest.Random(12, 1<<20))
	s.settler.syncMu.Lock() // another sync holds the staged files
	done := make(chan error)
	go func() { done <- s.Sync() }()
	select {
	case err := <-done:
		t.Fatalf("a sync returned (%v) while another held the staged files", err)
	case <-time.After(200 * time.Millisecond):
	}
	s.settler.syncMu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A check of a store in use (fsck, Frozen) never sees a staged file its
// snapshot names go: removals wait for the check.
func TestFrozenKeepsStagedFiles(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Mounted: true, WriteBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.settler.stop()
	in := stageFile(t, s, "f", layouttest.Random(13, 1<<20))
	err = s.Frozen(func(ns *meta.Namespace) error {
		snap, err := ns.Lookup(meta.RootIno, "f")
		if err != nil {
			return err
		}
		if _, err := s.settler.settleAll(nil, 0); err != nil {
			return err
		}
		removed := make(chan error)
		go func() { removed <- s.settler.removeDoomed(0) }()
		select {
		case err := <-removed:
			return fmt.Errorf("a settled staged file was removed under a check (%v)", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := s.CheckStaged(&snap.Content); err != nil {
			return err
		}
		go func() { <-removed }()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ns.GetInode(in.Ino); got.Content.Staged != 0 {
		t.Fatal("not settled")
	}
}
