package integration

// Random sequences of operations run on the mount and on a local folder
// side by side: both must give the same results and bytes.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestRandomWritesMatchLocalDisk(t *testing.T) {
	m := mountStore(t, newStore(t))
	const size = 64 << 20
	local := filepath.Join(t.TempDir(), "local")
	remote := m.path("random.bin")
	r := rand.New(rand.NewSource(3))
	fl, _ := os.Create(local)
	fr, err := os.Create(remote)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 300; i++ {
		off := r.Int63n(size)
		n := 1 + r.Intn(len(buf))
		r.Read(buf[:n])
		if _, err := fl.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
		if _, err := fr.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 { // read back through the same handle mid-way
			a, b := make([]byte, 4096), make([]byte, 4096)
			fl.ReadAt(a, off)
			fr.ReadAt(b, off)
			if !bytes.Equal(a, b) {
				t.Fatalf("read-back at %d differs", off)
			}
		}
	}
	fl.Close()
	if err := fr.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "cmp", local, remote)
}

// errKind reduces an error to what both file systems must agree on.
func errKind(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return "error"
}

// A random sequence of writes, truncates, renames, unlinks and reads runs
// against the mount and a local directory; after every step both hold the
// same names and bytes. The race detector makes each step four times
// slower, so it watches a shorter sequence and a plain daemon runs the long
// one.
func TestRandomOpsMatchLocalDisk(t *testing.T) {
	t.Parallel() // waits on FUSE round trips; overlaps with the crash test
	t.Run("race", func(t *testing.T) {
		if !raceDaemonWanted() {
			t.Skip("make stress's: CKPTFS_RACE_STEPS or CKPTFS_RACE_DAEMON builds a daemon with the race detector")
		}
		t.Parallel() // each has a mount of its own
		// make stress: 10,000 steps
		randomOps(t, mountStoreWith(t, raceBin, newStore(t)), envInt("CKPTFS_RACE_STEPS", 2000), 8)
	})
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		randomOps(t, mountStoreWith(t, plainBin, newStore(t)), envInt("CKPTFS_STRESS_STEPS", 4000), 9) // make stress: 50,000
	})
}

func randomOps(t *testing.T, m *mount, steps int, seed int64) {
	dirs := [2]string{m.path("ops"), filepath.Join(t.TempDir(), "ops")}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewSource(seed))
	names := []string{"a", "b", "c", "d.safetensors", "e"}
	buf := make([]byte, 300<<10)
	var history []string // the last operations, for a failure message
	for step := 0; step < steps; step++ {
		name := names[r.Intn(len(names))]
		other := names[r.Intn(len(names))]
		off := r.Int63n(600 << 10)
		n := 1 + r.Intn(len(buf))
		r.Read(buf[:n])
		op := r.Intn(10)
		var results [2]string
		for i, d := range dirs {
			p := filepath.Join(d, name)
			var err error
			switch {
			case op < 4: // write at a random offset, or append, through one open
				var f *os.File
				if f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644); err == nil {
					if op == 0 {
						_, err = f.Write(buf[:n]) // at offset 0 of an existing file
					} else {
						_, err = f.WriteAt(buf[:n], off)
					}
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
			case op == 4:
				err = os.Truncate(p, off/2)
			case op == 5:
				err = os.Rename(p, filepath.Join(d, other))
			case op == 6:
				err = os.Remove(p)
			case op == 7: // write from scratch in order, as cp does
				err = os.WriteFile(p, buf[:n], 0o644)
			default: // read a range
				var f *os.File
				if f, err = os.Open(p); err == nil {
					got := make([]byte, n)
					k, rerr := f.ReadAt(got, off)
					if rerr != nil && k == 0 && off < 600<<10 {
						err = nil
					}
					results[i] = fmt.Sprintf("%x", got[:k])
					f.Close()
				}
			}
			results[i] = errKind(err) + " " + results[i]
		}
		history = append(history[max(len(history)-19, 0):], fmt.Sprintf("step %d: op %d on %s (other %s, off %d, n %d)", step, op, name, other, off, n))
		if results[0] != results[1] {
			t.Fatalf("mount %.80s, local %.80s after:\n%s", results[0], results[1], strings.Join(history, "\n"))
		}
		// Every step: the names, and the contents of the files it touched;
		// every 25th step and the last, every file.
		var only []string
		if step%25 != 24 && step != steps-1 {
			only = []string{name, other}
		}
		if err := sameDirs(dirs[0], dirs[1], only...); err != nil {
			t.Fatalf("%v after:\n%s", err, strings.Join(history, "\n"))
		}
	}
}

// sameDirs compares the names and contents of two flat directories: the
// contents of only the files named in only, if any are.
func sameDirs(a, b string, only ...string) error {
	list := func(d string) (map[string][]byte, error) {
		entries, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		out := map[string][]byte{}
		for _, e := range entries {
			if len(only) > 0 && !slices.Contains(only, e.Name()) {
				out[e.Name()] = nil
				continue
			}
			if out[e.Name()], err = os.ReadFile(filepath.Join(d, e.Name())); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	la, err := list(a)
	if err != nil {
		return err
	}
	lb, err := list(b)
	if err != nil {
		return err
	}
	if len(la) != len(lb) {
		return fmt.Errorf("mount has %d files, local %d", len(la), len(lb))
	}
	for k, v := range lb {
		if got, ok := la[k]; !ok || !bytes.Equal(got, v) {
			return fmt.Errorf("%s differs: %d bytes on the mount, %d local (present: %v)", k, len(got), len(v), ok)
		}
	}
	return nil
}
