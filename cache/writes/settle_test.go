package writes

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
)

// openPath opens a write path that writes behind on a new store, its
// settler stopped: tests settle by hand.
func openPath(t *testing.T) (*store.Store, *Path) {
	t.Helper()
	return openPathAt(t, t.TempDir())
}

func openPathAt(t *testing.T, dir string) (*store.Store, *Path) {
	t.Helper()
	s, w := openToCrash(t, dir)
	t.Cleanup(func() { w.Close(); s.Close() })
	return s, w
}

// openToCrash is openPathAt for a test that crashes the store itself.
func openToCrash(t *testing.T, dir string) (*store.Store, *Path) {
	t.Helper()
	s, err := store.Open(dir, store.Options{CacheBytes: 8 << 20, Mounted: true})
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(s, Options{Behind: true})
	if err != nil {
		t.Fatal(err)
	}
	w.settler.stop()
	return s, w
}

// crash leaves s as a killed process leaves its store: nothing settled,
// the database and packs as they are.
func crash(t *testing.T, s *store.Store) {
	t.Helper()
	if err := s.Abandon(); err != nil {
		t.Fatal(err)
	}
}

// stageFile commits data as the staged content of file name in the root.
func stageFile(t *testing.T, w *Path, name string, data []byte) *meta.Inode {
	t.Helper()
	f, err := os.CreateTemp(w.st.DraftsDir(), "write-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	c, err := w.stage(f, int64(len(data)), false)
	if err != nil {
		t.Fatal(err)
	}
	ns := w.st.Namespace()
	in, err := ns.Lookup(meta.RootIno, name)
	if err != nil {
		in, err = ns.Create(meta.RootIno, name, meta.Inode{Mode: syscall.S_IFREG | 0o644})
	}
	if err != nil {
		t.Fatal(err)
	}
	in, err = ns.Update(in.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func stagedNames(t *testing.T, s *store.Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.StagedDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// Staged content reads as written at once; settling swaps the record to
// chunks of the same bytes, a reader opened before still reads after the
// file is gone, and staged files nobody holds (rewritten, removed) are
// dropped unread.
func TestStagedFilesSettleToChunks(t *testing.T) {
	s, w := openPath(t)
	data := safetensorsBytes(storetest.Random(5, 2<<20+7), storetest.Random(6, 1000))
	a := stageFile(t, w, "a.safetensors", data)
	if a.Content.Staged == 0 || len(a.Content.Chunks) != 0 {
		t.Fatalf("staged record holds %+v", a.Content)
	}
	before := s.NewReader("a", &a.Content)
	if !bytes.Equal(storetest.ReadAll(t, s, &a.Content), data) {
		t.Fatal("staged content reads differently")
	}
	stageFile(t, w, "b", []byte("old"))
	stageFile(t, w, "b", []byte("new bytes")) // the first is nobody's
	c := stageFile(t, w, "c", []byte("removed before it settled"))
	ns := s.Namespace()
	if err := ns.Remove(meta.RootIno, "c", false); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckStaged(&c.Content); err != nil {
		t.Fatal(err)
	}
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.settler.removeDoomed(0); err != nil {
		t.Fatal(err)
	}
	if left := stagedNames(t, s); len(left) != 0 {
		t.Fatalf("staged files left after settling: %v", left)
	}
	a, _ = ns.Lookup(meta.RootIno, "a.safetensors")
	if a.Content.Staged != 0 || a.Content.Kind != meta.KindSafetensors || len(a.Content.Chunks) < 3 {
		t.Fatalf("settled record holds %+v", a.Content)
	}
	if !bytes.Equal(storetest.ReadAll(t, s, &a.Content), data) {
		t.Fatal("settled content reads differently")
	}
	got := make([]byte, len(data))
	if n, err := before.ReadAt(got, 0); n != len(data) || !bytes.Equal(got, data) {
		t.Fatalf("a reader of the staged file after it went: %d, %v", n, err)
	}
	b, _ := ns.Lookup(meta.RootIno, "b")
	if string(storetest.ReadAll(t, s, &b.Content)) != "new bytes" {
		t.Fatal("b lost its last write")
	}
	if err := s.CheckStaged(&c.Content); err == nil {
		t.Fatal("fsck's check passed a staged file that is gone")
	}
}

// A file removed or rewritten while its batch is chunked is nobody's at
// the swap: its staged file goes like one removed before its turn. It was
// left on disk until the next mount, and under load, when chunking takes
// seconds, save_total_limit rotation left a checkpoint of staged files
// there every few saves.
func TestStagedFileGoneDuringItsSettleIsRemoved(t *testing.T) {
	s, w := openPath(t)
	stageFile(t, w, "rotated", storetest.Random(7, 300_000))
	stageFile(t, w, "rewritten", storetest.Random(8, 300_000))
	ns := s.Namespace()
	w.settler.beforeSwap = func() {
		w.settler.beforeSwap = nil
		if err := ns.Remove(meta.RootIno, "rotated", false); err != nil {
			t.Error(err)
		}
		stageFile(t, w, "rewritten", []byte("the new content"))
	}
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.settler.removeDoomed(0); err != nil {
		t.Fatal(err)
	}
	in, err := ns.Lookup(meta.RootIno, "rewritten")
	if err != nil {
		t.Fatal(err)
	}
	if left := stagedNames(t, s); len(left) != 1 || left[0] != strconv.FormatUint(in.Content.Staged, 16) {
		t.Fatalf("staged files left: %v, want only the rewrite's %x", left, in.Content.Staged)
	}
}

// A staged file the kernel writes while it is chunked (a shared mapping
// that outlived its close; a backing file's writer after a daemon crash)
// is not swapped for chunks of what it held before: it stays staged and is
// chunked again, with what was written.
func TestStagedFileChangedWhileChunkedIsChunkedAgain(t *testing.T) {
	s, w := openPath(t)
	data := storetest.Random(9, 300_000)
	c := stageFile(t, w, "mapped", data)
	w.settler.beforeSwap = func() {
		w.settler.beforeSwap = nil
		f, err := os.OpenFile(s.StagedPath(c.Content.Staged), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		copy(data, "written through a mapping")
		if _, err := f.WriteAt(data[:32], 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	in, err := s.Namespace().Lookup(meta.RootIno, "mapped")
	if err != nil || in.Content.Staged != c.Content.Staged {
		t.Fatalf("a staged file written while chunked was swapped: %+v, %v", in.Content, err)
	}
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	in, err = s.Namespace().Lookup(meta.RootIno, "mapped")
	if err != nil || in.Content.Staged != 0 {
		t.Fatalf("not chunked the second time: %+v, %v", in.Content, err)
	}
	if got := storetest.ReadAll(t, s, &in.Content); !bytes.Equal(got, data) {
		t.Fatal("the chunks miss what was written while the file was chunked first")
	}
}

// A staged file opened in place while it is chunked (a backing file: the
// checkpoint saved last, read back at once) is not swapped for its chunks:
// the open gets its lease, its chunking stops or its swap is skipped, and
// it is chunked once the lease ends. Only a file being swapped refuses
// one.
func TestLeaseWhileChunkedStopsTheSettle(t *testing.T) {
	s, w := openPath(t)
	data := storetest.Random(10, 300_000)
	in := stageFile(t, w, "saved", data)
	var b *Backed
	w.settler.beforeSwap = func() {
		w.settler.beforeSwap = nil
		var ok bool
		if b, ok = w.BackStaged(in.Ino, "saved", &in.Content); !ok {
			t.Fatal("no lease for a file chunked, not swapped yet")
		}
	}
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.Namespace().Lookup(meta.RootIno, "saved")
	if err != nil || got.Content.Staged != in.Content.Staged {
		t.Fatalf("swapped while leased: %+v, %v", got.Content, err)
	}
	// Leased, it is not read again; the chunking of one leased as it is
	// read stops at its next read.
	q := queuedFile{ino: in.Ino, id: in.Content.Staged}
	if _, _, _, err := w.settler.ingest(q, in.Content.Size); !errors.Is(err, errLeased) {
		t.Fatalf("chunking a leased file: %v, want errLeased", err)
	}
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.Namespace().Lookup(meta.RootIno, "saved"); got.Content.Staged == 0 {
		t.Fatal("chunked while leased")
	}
	b.Close(false)
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	got, err = s.Namespace().Lookup(meta.RootIno, "saved")
	if err != nil || got.Content.Staged != 0 {
		t.Fatalf("not chunked once the lease ended: %+v, %v", got.Content, err)
	}
	if !bytes.Equal(storetest.ReadAll(t, s, &got.Content), data) {
		t.Fatal("chunks differ from the staged file")
	}
	// Being swapped, a file takes no lease.
	in = stageFile(t, w, "swapping", data)
	if !w.settler.startSwap(in.Content.Staged) {
		t.Fatal("an unleased file did not start its swap")
	}
	if b, ok := w.BackStaged(in.Ino, "swapping", &in.Content); ok {
		b.Close(false)
		t.Fatal("a file being swapped was leased")
	}
}

// The staged file of a file removed while a writer holds it in place (an
// unlinked file's appender) stays while the lease lasts, and goes after.
func TestLeasedStagedFileOfNobodyStaysWhileLeased(t *testing.T) {
	s, w := openPath(t)
	in := stageFile(t, w, "unlinked", storetest.Random(11, 100_000))
	f, release, ok := w.lease(&in.Content)
	if !ok {
		t.Fatal("no lease")
	}
	defer f.Close()
	if err := s.Namespace().Remove(meta.RootIno, "unlinked", false); err != nil {
		t.Fatal(err)
	}
	path := s.StagedPath(in.Content.Staged)
	settle := func() {
		t.Helper()
		if _, err := w.settler.settleAll(nil, 0); err != nil {
			t.Fatal(err)
		}
		if err := w.settler.removeDoomed(0); err != nil {
			t.Fatal(err)
		}
	}
	settle()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a leased staged file went: %v", err)
	}
	release()
	settle()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the staged file of nobody stayed once its lease ended: %v", err)
	}
}

// safetensorsBytes is a safetensors file of two U8 tensors.
func safetensorsBytes(a, b []byte) []byte {
	js := []byte(`{"a":{"dtype":"U8","shape":[` + strconv.Itoa(len(a)) + `],"data_offsets":[0,` + strconv.Itoa(len(a)) + `]},` +
		`"b":{"dtype":"U8","shape":[` + strconv.Itoa(len(b)) + `],"data_offsets":[` + strconv.Itoa(len(a)) + `,` + strconv.Itoa(len(a)+len(b)) + `]}}`)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	out = append(out, js...)
	out = append(out, a...)
	return append(out, b...)
}

// The settler leaves young staged files for later and says when, but drops
// a young one nobody holds at once: rotated checkpoints are never chunked.
func TestYoungStagedFilesWait(t *testing.T) {
	s, w := openPath(t)
	kept := stageFile(t, w, "kept", []byte("young"))
	stageFile(t, w, "rotated", []byte("young too"))
	if err := s.Namespace().Remove(meta.RootIno, "rotated", false); err != nil {
		t.Fatal(err)
	}
	after, err := w.settler.settleAll(nil, time.Hour)
	if err != nil || after <= 0 || after > time.Hour {
		t.Fatalf("settle of young files: wait %v, %v", after, err)
	}
	if in, _ := s.Namespace().Lookup(meta.RootIno, "kept"); in.Content.Staged != kept.Content.Staged {
		t.Fatal("a young file was chunked")
	}
	if err := w.settler.removeDoomed(time.Hour); err != nil {
		t.Fatal(err)
	}
	if left := stagedNames(t, s); len(left) != 1 {
		t.Fatalf("staged files %v, want only the kept one's", left)
	}
}

// A store opened after a crash settles what was staged, before Open
// returns unless it writes behind, and removes staged files no record
// holds, and the drafts the dead process left.
func TestStagedFilesSurviveACrash(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, store.Options{Mounted: true})
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(s, Options{Behind: true})
	if err != nil {
		t.Fatal(err)
	}
	w.settler.stop()
	data := storetest.Random(4, 3<<20)
	stageFile(t, w, "w.bin", data)
	crash(t, s)
	os.WriteFile(filepath.Join(dir, "staged", "ffff"), []byte("orphan"), 0o600)
	os.WriteFile(filepath.Join(dir, "drafts", "write-1"), []byte("left"), 0o600)
	os.MkdirAll(filepath.Join(dir, "staging"), 0o700) // where drafts were kept before

	s, err = store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err = Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	in, _ := s.Namespace().Lookup(meta.RootIno, "w.bin")
	if in.Content.Staged != 0 || !bytes.Equal(storetest.ReadAll(t, s, &in.Content), data) {
		t.Fatalf("after the crash: %+v", in.Content)
	}
	if err := w.settler.removeDoomed(0); err != nil {
		t.Fatal(err)
	}
	if left := stagedNames(t, s); len(left) != 0 {
		t.Fatalf("staged files left: %v", left)
	}
	if left, _ := os.ReadDir(s.DraftsDir()); len(left) != 0 {
		t.Fatal("drafts not cleared")
	}
	if _, err := os.Stat(filepath.Join(dir, "staging")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the old drafts folder stayed")
	}
}

// Staged bytes not settled yet count against the free space twice.
func TestStagedBacklogIsReserved(t *testing.T) {
	s, w := openPath(t)
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.Dir(), &st); err != nil {
		t.Fatal(err)
	}
	w.settler.backlog.Store(int64(st.Bavail) * st.Bsize) // as if a disk's worth waited to settle
	if err := w.ensureSpace(1, 0); err == nil {
		t.Fatal("a write was allowed with no room left to settle what is staged")
	}
	w.settler.backlog.Store(0)
	if err := w.ensureSpace(1, 0); err != nil {
		t.Fatal(err)
	}
}

func TestBadStagedFileDoesNotStopSettling(t *testing.T) {
	s, w := openPath(t)
	bad := stageFile(t, w, "bad", storetest.Random(5, 2<<20))
	good := stageFile(t, w, "good", storetest.Random(6, 2<<20))
	if err := os.Truncate(s.StagedPath(bad.Content.Staged), 1000); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second pass does not try the bad one again
		if _, err := w.settler.settleAll(nil, 0); err != nil {
			t.Fatalf("one bad staged file stopped settling: %v", err)
		}
	}
	if in, _ := s.Namespace().GetInode(good.Ino); in.Content.Staged != 0 {
		t.Fatal("the file staged after a bad one was not settled")
	}
	if queued, _ := s.Namespace().Queued(bad.Content.Staged); !queued {
		t.Fatal("the bad staged file left the queue")
	}
	if w.settler.backlog.Load() != 0 {
		t.Fatalf("backlog %d after settling all that can be", w.settler.backlog.Load())
	}
}

// After a crash, a file closed and never synced whose staged content the
// crash cut short is removed: it reads back whole or not at all, never
// EIO. Files whose staged content is whole stay.
func TestFileCutShortByACrashIsRemoved(t *testing.T) {
	dir := t.TempDir()
	s, w := openToCrash(t, dir)
	if _, err := s.Namespace().Create(meta.RootIno, "d", meta.Inode{Mode: syscall.S_IFDIR | 0o755}); err != nil {
		t.Fatal(err)
	}
	whole := storetest.Random(7, 1<<20)
	stageFile(t, w, "whole", whole)
	cut := stageFile(t, w, "cut", storetest.Random(8, 1<<20))
	if _, err := s.Namespace().Link(cut.Ino, mustLookup(t, s, "d").Ino, "link"); err != nil {
		t.Fatal(err)
	}
	crash(t, s)
	if err := os.Truncate(filepath.Join(dir, "staged", strconv.FormatUint(cut.Content.Staged, 16)), 4096); err != nil {
		t.Fatal(err)
	}

	s, _ = openPathAt(t, dir)
	if _, err := s.Namespace().Lookup(meta.RootIno, "cut"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("a file cut short by a crash is still there: %v", err)
	}
	if _, err := s.Namespace().Resolve("d/link"); err == nil {
		t.Fatal("a link of a file cut short by a crash is still there")
	}
	in := mustLookup(t, s, "whole")
	if !bytes.Equal(storetest.ReadAll(t, s, &in.Content), whole) {
		t.Fatal("a whole staged file changed")
	}
}

func mustLookup(t *testing.T, s *store.Store, name string) *meta.Inode {
	t.Helper()
	in, err := s.Namespace().Lookup(meta.RootIno, name)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// fsck, ls and stat open the store read-only: a store a crash left with
// staged files and an orphan keeps both.
func TestReadOnlyOpenChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s, w := openToCrash(t, dir)
	in := stageFile(t, w, "w", storetest.Random(9, 1<<20))
	crash(t, s)
	orphan := filepath.Join(dir, "staged", "ffff")
	os.WriteFile(orphan, []byte("orphan"), 0o600)

	ro, err := store.Open(dir, store.Options{ReadOnly: true})
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
	if _, err := store.Open(filepath.Join(dir, "none"), store.Options{ReadOnly: true}); err == nil {
		t.Fatal("a read-only open made a store")
	}
	s, err = store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err = Open(s, Options{}) // not behind: settles what was left first
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got, _ := s.Namespace().Lookup(meta.RootIno, "w"); got.Content.Staged != 0 {
		t.Fatal("still staged after a read-write open")
	}
}

// A sparse staged file counts what it takes on disk against the room
// kept for settling, not its length: one user's truncate to the size of
// the disk must not deny every other user's writes.
func TestSparseStagedFileTakesNoRoom(t *testing.T) {
	s, w := openPath(t)
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.Dir(), &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	f, err := os.CreateTemp(s.DraftsDir(), "write-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(free); err != nil {
		t.Fatal(err)
	}
	c, err := w.stage(f, free, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.settler.backlog.Load(); got > 1<<20 {
		t.Fatalf("a sparse file of %d bytes counts %d against the free space", free, got)
	}
	if err := w.ensureSpace(8<<20, 0); err != nil {
		t.Fatalf("an 8 MiB write refused after another's sparse file: %v", err)
	}
	w.unstage(c)
	if _, err := os.Stat(s.StagedPath(c.Staged)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("an unstaged file stayed")
	}
}

// Appends to a file whose content is staged go to its staged file in
// place, under a lease the settler respects; the record's bytes never
// change, and a settle after the lease ends takes the longer file.
func TestAppendsToAStagedFileInPlace(t *testing.T) {
	s, w := openPath(t)
	first := storetest.Random(10, 1<<20)
	in := stageFile(t, w, "log", first)
	before := s.NewReader("log", &in.Content)
	f, release, ok := w.lease(&in.Content)
	if !ok {
		t.Fatal("no lease on a staged file")
	}
	more := storetest.Random(11, 300<<10)
	if _, err := f.WriteAt(more, int64(len(first))); err != nil {
		t.Fatal(err)
	}
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Namespace().GetInode(in.Ino); got.Content.Staged != in.Content.Staged {
		t.Fatal("a staged file under a lease was settled")
	}
	c, err := w.restage(f, &in.Content, int64(len(first)+len(more)), false)
	if err != nil {
		t.Fatal(err)
	}
	in, err = s.Namespace().Update(in.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	if err != nil {
		t.Fatal(err)
	}
	release()
	all := append(append([]byte(nil), first...), more...)
	if !bytes.Equal(storetest.ReadAll(t, s, &in.Content), all) {
		t.Fatal("the appended file reads differently")
	}
	got := make([]byte, len(first)+10)
	if n, _ := before.ReadAt(got, 0); n != len(first) || !bytes.Equal(got[:n], first) {
		t.Fatalf("a reader of the record before the append read %d bytes", n)
	}
	if _, err := w.settler.settleAll(nil, 0); err != nil {
		t.Fatal(err)
	}
	in, _ = s.Namespace().GetInode(in.Ino)
	if in.Content.Staged != 0 || !bytes.Equal(storetest.ReadAll(t, s, &in.Content), all) {
		t.Fatalf("settled after the lease: %+v", in.Content)
	}
	if _, _, ok := w.lease(&meta.Content{Staged: c.Staged, Size: c.Size}); ok {
		t.Fatal("a lease on a settled staged file")
	}
}

// A staged file's sync that returns waits for what another sync took.
func TestStagedSyncWaitsForTheOtherSync(t *testing.T) {
	_, w := openPath(t)
	stageFile(t, w, "a", storetest.Random(12, 1<<20))
	w.settler.syncMu.Lock() // another sync holds the staged files
	done := make(chan error)
	go func() { done <- w.Sync() }()
	select {
	case err := <-done:
		t.Fatalf("a sync returned (%v) while another held the staged files", err)
	case <-time.After(200 * time.Millisecond):
	}
	w.settler.syncMu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A check of a store in use (fsck, Frozen) never sees a staged file its
// snapshot names go: removals wait for the check.
func TestFrozenKeepsStagedFiles(t *testing.T) {
	s, w := openPath(t)
	in := stageFile(t, w, "f", storetest.Random(13, 1<<20))
	err := s.Frozen(func(ns *meta.Namespace) error {
		snap, err := ns.Lookup(meta.RootIno, "f")
		if err != nil {
			return err
		}
		if _, err := w.settler.settleAll(nil, 0); err != nil {
			return err
		}
		removed := make(chan error)
		go func() { removed <- w.settler.removeDoomed(0) }()
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
	if got, _ := s.Namespace().GetInode(in.Ino); got.Content.Staged != 0 {
		t.Fatal("not settled")
	}
}
