package integration

// The daemon stopped: by SIGTERM, by kill -9 at random points, and by a
// simulated power cut. What was closed or synced before must read back.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/storetest"
	"golang.org/x/sys/unix"
)

// TestSigtermFinishesWrites: SIGTERM while a file is open for writing lets
// the writer finish; its close commits the whole file, then the daemon
// exits; the next mount serves it, and what was closed before, whole.
func TestSigtermFinishesWrites(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	done := storetest.Random(7, 2<<20)
	if err := os.WriteFile(m.path("done"), done, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(m.path("open"))
	if err != nil {
		t.Fatal(err)
	}
	first, second := storetest.Random(8, 4<<20), storetest.Random(9, 4<<20)
	if _, err := f.Write(first); err != nil {
		t.Fatal(err)
	}
	pid := m.pid()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(second); err != nil {
		t.Fatalf("write after SIGTERM: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after SIGTERM: %v", err)
	}
	if !waitExit(pid) {
		t.Fatal("daemon still running after the writer closed")
	}
	m2 := mountStore(t, store)
	readEquals(t, m2.path("done"), done)
	readEquals(t, m2.path("open"), append(first, second...))
	m2.unmount()
	fsckClean(t, store)
}

func TestKillDuringCopyKeepsEarlierFiles(t *testing.T) {
	ck := sharedHFCheckpoint(t)
	store := importShared(t, ck)
	m := mountStore(t, store)
	big := filepath.Join(t.TempDir(), "big.bin")
	f, _ := os.Create(big)
	chunk := make([]byte, 8<<20)
	r := rand.New(rand.NewSource(6))
	for i := 0; i < 128; i++ { // 1 GiB
		r.Read(chunk)
		f.Write(chunk)
	}
	f.Close()
	cp := exec.Command("cp", big, m.path("big.bin"))
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the daemon once the copy is under way.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(m.path("big.bin")); err == nil && st.Size() > 100<<20 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.kill()
	cp.Wait() // fails: the mount is gone
	// What the copy wrote: a staging file, or chunks with --write-through.
	written := func() int64 {
		return diskUse(t, filepath.Join(store, "packs")) + diskUse(t, filepath.Join(store, "drafts"))
	}
	killed := written()

	m = mountStore(t, store)
	sameTrees(t, ck.dir, m.path("hf"))
	if st, err := os.Stat(m.path("big.bin")); err == nil && st.Size() != 0 {
		t.Fatalf("interrupted file visible with %d bytes", st.Size())
	}
	m.unmount()
	fsckClean(t, store)
	// The interrupted copy's staging file goes at the next open, its orphan
	// chunks by a reclaim pass of the mount or by gc.
	out := mustCkptfs(t, store, "gc")
	if freed := killed - written(); freed < 64<<20 {
		t.Fatalf("%d bytes of the interrupted copy freed, want over 64 MiB (gc: %s)", freed, out)
	}
}

// kill -9 of the daemon at random points while a copy runs: after each
// remount every file closed before the kill and every file fsynced is
// intact, and the file being copied over is its earlier version, empty (cp
// truncates it first) or complete, never half written. Reclaim runs every
// 300 ms after a change, so kills land in sweeps and compactions too; the
// space the overwritten versions took comes back after the last restart.
func TestCrashAtRandomPoints(t *testing.T) {
	t.Parallel() // mostly waits; overlaps with the random-operation test
	store := newStore(t)
	local := t.TempDir()
	r := rand.New(rand.NewSource(9))
	versions := map[string]bool{fileHashBytes(nil): true} // accepted contents of inflight.bin
	want := map[string]string{}                           // closed or fsynced file -> hash
	kills := envInt("CKPTFS_CRASH_KILLS", 20)             // make stress sets 60
	for i := 0; i < kills; i++ {
		m := mountStoreWith(t, plainBin, store, reclaimOften) // durability, not races: the fast daemon
		closed := make([]byte, 1<<20+r.Intn(4<<20))
		r.Read(closed)
		name := fmt.Sprintf("closed-%02d", i)
		if err := os.WriteFile(m.path(name), closed, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = fileHashBytes(closed)

		synced := make([]byte, 1<<20)
		r.Read(synced)
		f, err := os.Create(m.path(fmt.Sprintf("synced-%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Write(synced)
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		want[filepath.Base(f.Name())] = fileHashBytes(synced) // left open: killed right after fsync

		next := make([]byte, 64<<20+r.Intn(64<<20))
		r.Read(next)
		src := filepath.Join(local, "next.bin")
		os.WriteFile(src, next, 0o644)
		cp := exec.Command("cp", src, m.path("inflight.bin"))
		if err := cp.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(r.Intn(1500)) * time.Millisecond)
		m.kill()
		cpErr := cp.Wait()
		f.Close()
		if cpErr == nil {
			versions[fileHashBytes(next)] = true // it finished before the kill
		}

		m = mountStoreWith(t, plainBin, store, reclaimOften)
		for name, h := range want {
			if got := fileHash(t, m.path(name)); got != h {
				t.Fatalf("kill %d: %s changed", i, name)
			}
		}
		if got := fileHash(t, m.path("inflight.bin")); !versions[got] {
			t.Fatalf("kill %d: inflight.bin is neither empty nor a complete version", i)
		}
		versions[fileHashBytes(next)] = true // a later kill may leave this one
		m.unmount()
	}
	fsckClean(t, store)
	var live int64 // what the files left take, as stored (random bytes)
	m := mountStoreWith(t, plainBin, store, reclaimOften)
	entries, _ := os.ReadDir(m.dir)
	for _, e := range entries {
		info, _ := e.Info()
		live += info.Size()
	}
	os.WriteFile(m.path("kick"), nil, 0o644) // a change starts a pass
	waitFor(t, "the space of the versions overwritten", time.Minute, func() bool {
		return diskUse(t, filepath.Join(store, "packs")) <= live+live/4+8<<20
	})
	m.unmount()
	fsckClean(t, store)
}

// reclaimOften runs a reclaim pass 300 ms after every change.
const reclaimOften = "--reclaim-after=300ms"

// A power cut is simulated on a daemon built with -tags powercut, which
// logs what each of the store's syncs made durable (cache/durable): after
// kill -9, every pack and staged file made since the session began loses
// what it gained after its last sync, and goes if no synced listing of its
// folder holds it. Badger's files are left as they are: the worst case for
// the order of durability, a record durable before what it names.

var (
	powercutOnce sync.Once
	powercutPath string
	powercutErr  error
)

// powercutBin builds the daemon that logs its syncs, once per run.
func powercutBin(t *testing.T) string {
	t.Helper()
	powercutOnce.Do(func() {
		powercutPath = filepath.Join(binDir, "ckptfs-powercut")
		powercutErr = buildDaemon(powercutPath, "-tags", "powercut")
	})
	if powercutErr != nil {
		t.Fatal(powercutErr)
	}
	return powercutPath
}

// powercutMount mounts store with the logging daemon and returns the
// mount and the log, with when the session began.
func powercutMount(t *testing.T, store string, extra ...string) (*mount, string, time.Time) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "syncs.log")
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	cmd := exec.Command(powercutBin(t), append([]string{"--store", store, "mount"}, append(extra, dir)...)...)
	cmd.Env = append(os.Environ(), "CKPTFS_POWERCUT_LOG="+log)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	m := &mount{t: t, store: store, dir: dir}
	t.Cleanup(m.cleanup)
	return m, log, began
}

// cutPower kills the daemon and drops from the store what was written
// after its last sync, of the files born since began.
func cutPower(t *testing.T, m *mount, log string, began time.Time) {
	t.Helper()
	m.kill()
	synced := map[string]int64{}    // file id -> size at its last sync
	listed := map[string][]string{} // folder -> its entries at its last sync
	f, err := os.Open(log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if f != nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			switch {
			case len(fields) == 3 && fields[0] == "file":
				n, _ := strconv.ParseInt(fields[2], 10, 64)
				synced[fields[1]] = n
			case len(fields) >= 2 && fields[0] == "dir":
				listed[filepath.Clean(fields[1])] = fields[2:]
			}
		}
		f.Close()
	}
	for _, sub := range []string{"packs", "staged"} {
		dir := filepath.Join(m.store, sub)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			id, born := fileIdentity(t, p)
			if born.Before(began) {
				continue // from a session that closed cleanly
			}
			size, wasSynced := synced[id]
			inListing := false
			for _, l := range listed[dir] {
				inListing = inListing || l == id
			}
			if !inListing {
				os.Remove(p) // its name never reached the disk
				continue
			}
			if !wasSynced {
				size = 0
			}
			if err := os.Truncate(p, size); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// fileIdentity is how the powercut log names a file, and its birth time.
func fileIdentity(t *testing.T, p string) (string, time.Time) {
	t.Helper()
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_BTIME, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d.%d.%d", st.Ino, st.Btime.Sec, st.Btime.Nsec), time.Unix(st.Btime.Sec, int64(st.Btime.Nsec))
}

// writeFile writes data to p, fsynced when sync is set, and closes it.
func writeFile(t *testing.T, p string, data []byte, sync bool) {
	t.Helper()
	if err := createWritten(t, p, os.O_RDWR, data, sync).Close(); err != nil {
		t.Fatal(err)
	}
}

// createWritten creates p, open for access (os.O_RDWR, os.O_WRONLY), with
// data, fsynced when sync is set, and returns it open.
func createWritten(t *testing.T, p string, access int, data []byte, sync bool) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, access|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync %s: %v", p, err)
		}
	}
	return f
}

// appendFile appends data to p and closes it, without a sync.
func appendFile(t *testing.T, p string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// readBackOrGone fails the test unless p reads back as want or is gone:
// never an error, never other bytes.
func readBackOrGone(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		t.Fatalf("%s after the power cut: %v (a file not synced reads back whole or not at all)", p, err)
	case !bytes.Equal(got, want):
		t.Fatalf("%s after the power cut: %d bytes, not the %d written", p, len(got), len(want))
	}
}

// After a power cut every file whose fsync returned, or whose folder's
// fsync after a rename returned, reads back exactly; a file closed and not
// synced reads back whole or not at all, never EIO; a file fsynced and
// then settled keeps its chunks (they are durable before the record that
// names them); a file fsynced and then appended to keeps at least what
// was synced, as on a local disk; a cut-short staged file does not stop
// the settling of the others; fsck of the store before it is mounted again changes nothing.
func TestPowerCutKeepsWhatWasSynced(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	r := rand.New(rand.NewSource(27))
	random := func(n int) []byte { b := make([]byte, n); r.Read(b); return b }

	m, log, began := powercutMount(t, store)
	renamed := random(2 << 20)
	writeFile(t, m.path("renamed.tmp"), renamed, false)
	if err := os.Rename(m.path("renamed.tmp"), m.path("renamed.bin")); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Sync(); err != nil {
		t.Fatalf("fsync of a folder: %v", err)
	}
	dir.Close()
	synced := random(4 << 20)
	writeFile(t, m.path("synced.bin"), synced, true)
	// Logs: fsynced, then appended to and closed without a sync, one
	// after its chunks settled, one while its staged file takes appends.
	logLines, more := random(1<<20), random(64<<10)
	writeFile(t, m.path("settled.log"), logLines, true)
	waitSettled(t, store) // swapped to chunks, and no sync since
	writeFile(t, m.path("staged.log"), logLines, true)
	appendFile(t, m.path("staged.log"), more)
	appendFile(t, m.path("settled.log"), more) // no sync after it
	notSynced := random(3 << 20)
	writeFile(t, m.path("closed.bin"), notSynced, false)
	cutPower(t, m, log, began)

	before := storeListing(t, store)
	out, _ := ckptfs(t, store, "fsck") // may report what the cut cost
	if after := storeListing(t, store); after != before {
		t.Fatalf("fsck changed the store:\nbefore %s\nafter  %s\nfsck: %s", before, after, out)
	}

	m = mountStoreWith(t, plainBin, store)
	if got, err := os.ReadFile(m.path("synced.bin")); err != nil || !bytes.Equal(got, synced) {
		t.Fatalf("a file fsynced and then settled, after the power cut: %v", err)
	}
	if got, err := os.ReadFile(m.path("renamed.bin")); err != nil || !bytes.Equal(got, renamed) {
		t.Fatalf("a file renamed into a folder then fsynced, after the power cut: %v", err)
	}
	readBackOrGone(t, m.path("closed.bin"), notSynced)
	for _, name := range []string{"settled.log", "staged.log"} {
		got, err := os.ReadFile(m.path(name))
		if err != nil || !bytes.Equal(got, logLines) && !bytes.Equal(got, append(logLines, more...)) {
			t.Errorf("%s, fsynced, then appended to: %v (%d bytes; want the fsynced %d, or those and the %d appended)",
				name, err, len(got), len(logLines), len(more))
		}
	}
	waitSettled(t, store) // none stuck behind a file the cut damaged
	m.unmount()
	fsckClean(t, store)
}

// storeListing names every file of the store's staged and packs folders
// with its size.
func storeListing(t *testing.T, store string) string {
	t.Helper()
	var b strings.Builder
	for _, sub := range []string{"staged", "packs"} {
		entries, _ := os.ReadDir(filepath.Join(store, sub))
		for _, e := range entries {
			fi, err := e.Info()
			if err == nil {
				fmt.Fprintf(&b, "%s/%s:%d ", sub, e.Name(), fi.Size())
			}
		}
	}
	return b.String()
}

// A power cut after chunks were indexed but before their pack was synced
// leaves index entries whose records are gone: a later copy of the same
// bytes must be stored again, not deduplicated against them.
func TestPowerCutDoesNotPoisonDedup(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	content := make([]byte, 64<<20)
	rand.New(rand.NewSource(28)).Read(content)

	m, log, began := powercutMount(t, store, "--write-through") // chunks stored as written
	f, err := os.Create(m.path("interrupted.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(content[:32<<20]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the pipeline stores what it has
	cutPower(t, m, log, began)
	f.Close()

	// No reclaim pass deletes the entries no record names before the
	// copy: they stay until one runs, which takes a change and a while.
	m = mountStoreWith(t, plainBin, store, "--reclaim-after=1h")
	writeFile(t, m.path("again.bin"), content, true)
	waitSettled(t, store)
	m.unmount()
	m = mountStoreWith(t, plainBin, store)
	got, err := os.ReadFile(m.path("again.bin"))
	if err != nil || !bytes.Equal(got, content) {
		l, _ := os.ReadFile(filepath.Join(store, "ckptfs.log"))
		t.Fatalf("the same bytes written again after the power cut: %v\n%s", err, l)
	}
	// A flush commits what was written so far (a fork of any process with
	// the file open flushes it): what it committed reads back, never EIO.
	if got, err := os.ReadFile(m.path("interrupted.bin")); err != nil || !bytes.Equal(got, content[:len(got)]) {
		t.Fatalf("the file open at the power cut: %d bytes, %v", len(got), err)
	}
	m.unmount()
	fsckClean(t, store)
}
