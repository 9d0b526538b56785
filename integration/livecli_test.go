package integration

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/storetest"
)

// ckptfsStdout runs a CLI command against store and returns what it
// printed on stdout alone, failing the test if it fails.
func ckptfsStdout(t *testing.T, store string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ckptfsBin, append([]string{"--store", store}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ckptfs %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestCLIAgainstALiveMount: ls, stat and fsck --json against a running
// mount print what they print offline after the unmount; rm and gc work
// through the mount's daemon and give the space back while mounted; fsck
// of the live store is clean while a writer goes on; and the control
// socket serves no other user, even when its mode would let them in.
func TestCLIAgainstALiveMount(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	m := mountStore(t, store)
	if err := os.MkdirAll(m.path("scratch", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("scratch", "sub", "a.bin"), storetest.Random(7, 24<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, store) // in packs, not staged
	before := storetest.TreeBytes(t, filepath.Join(store, "packs"))

	// rm goes through the mount, and gc frees the space at once.
	if out := ckptfsStdout(t, store, "rm", "scratch"); !strings.Contains(out, "removed scratch") {
		t.Fatalf("rm: %q", out)
	}
	if _, err := os.Stat(m.path("scratch")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("scratch still in the mount after rm: %v", err)
	}
	out := ckptfsStdout(t, store, "gc")
	if !strings.HasPrefix(out, "freed ") || strings.HasPrefix(out, "freed 0 chunks") {
		t.Fatalf("gc against the live mount freed nothing: %q", out)
	}
	if after := storetest.TreeBytes(t, filepath.Join(store, "packs")); before-after < 20<<20 {
		t.Fatalf("packs %d -> %d bytes: gc did not give the 24 MiB back while mounted", before, after)
	}

	ck := genHFCheckpoint(t, t.TempDir(), 2, 6, 256<<10, 3)
	run(t, "cp", "-r", ck.dir, m.path("hf"))

	// fsck of the live store while a writer saves new files.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			p := m.path("busy", fmt.Sprintf("f%d.bin", i%3))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, storetest.Random(int64(i), 2<<20), 0o644); err != nil {
				writeErr = err
				return
			}
		}
	}()
	for range 2 {
		if out := ckptfsStdout(t, store, "fsck"); !strings.Contains(out, " 0 problems") {
			t.Errorf("fsck of the live store while written to: %s", out)
		}
	}
	stop.Store(true)
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}

	// What was staged is chunked, and what the writer overwrote goes now,
	// so that the store stays as it is from here to the unmount.
	waitSettled(t, store)
	if out := ckptfsStdout(t, store, "gc"); strings.Contains(out, "kept for the next pass") {
		t.Fatalf("gc against a quiet mount kept recent chunks: %s", out)
	}
	commands := [][]string{{"ls", "--json"}, {"stat", "--json"}, {"stat", "hf", "--json"}, {"fsck", "--json"}, {"ls"}, {"stat", "hf"}}
	live := map[string]string{}
	for _, args := range commands {
		live[strings.Join(args, " ")] = ckptfsStdout(t, store, args...)
	}
	if !strings.Contains(live["ls --json"], `"hf@single"`) {
		t.Fatalf("ls --json against the mount: %s", live["ls --json"])
	}

	// Another user: the socket is 0600 in a 0700 store. With the folders
	// and the socket opened up, the daemon still refuses the peer's uid;
	// the same call as root is the control case.
	for d := store; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	sock := filepath.Join(store, "control.sock")
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v, %v; want mode 0600", st, err)
	}
	if out, err := asNobody(ckptfsBin, "--store", store, "ls"); err == nil {
		t.Fatalf("another user listed the store through a 0600 socket: %s", out)
	}
	os.Chmod(sock, 0o666)
	if out, err := asNobody(ckptfsBin, "--store", store, "ls"); err == nil || !strings.Contains(out, "uid 65534 may not use") {
		t.Fatalf("another user through an open socket: %v\n%s", err, out)
	}
	os.Chmod(sock, 0o600)
	os.Chmod(store, 0o700)

	m.unmount()
	for _, args := range commands {
		key := strings.Join(args, " ")
		if offline := ckptfsStdout(t, store, args...); offline != live[key] {
			t.Errorf("ckptfs %s: live and offline differ\nlive:\n%s\noffline:\n%s", key, live[key], offline)
		}
	}
	fsckClean(t, store)
}
