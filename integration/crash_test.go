package integration

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

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
