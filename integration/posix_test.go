package integration

// The mount behaves as a local file system: the operations tools use,
// copies in and out, the rules of permissions and names, as on ext4.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/storetest"
)

// An HF checkpoint copied in reads back as written and through @single,
// also after a remount, and fsck is clean: make check's smoke test. What
// it checks does not depend on the size, so the checkpoint is small
// (18 MB): its shards and tensors span many chunks, as a large one's do;
// TestSavesWriteBehind copies the 300 MB shared checkpoint the same way.
func TestCopyRoundTripAndRemount(t *testing.T) {
	ck := genHFCheckpoint(t, t.TempDir(), 2, 8, 512<<10, 2)
	store := newStore(t)
	m := mountStore(t, store)
	run(t, "cp", "-r", ck.dir, m.path("hf"))
	out1 := filepath.Join(t.TempDir(), "out1")
	run(t, "cp", "-r", m.path("hf"), out1)
	sameTrees(t, ck.dir, out1)
	run(t, "cmp", filepath.Join(ck.dir, "model-00002-of-00002.safetensors"), m.path("hf", "model-00002-of-00002.safetensors"))
	checkTensors(t, "@single", readSafetensors(t, m.path("hf@single", "model.safetensors")), ck.tensors)
	m.unmount()

	m = mountStore(t, store)
	out2 := filepath.Join(t.TempDir(), "out2")
	run(t, "cp", "-r", m.path("hf"), out2)
	sameTrees(t, ck.dir, out2)
	m.unmount()
	fsckClean(t, store)
}

func TestFileOperations(t *testing.T) {
	m := mountStore(t, newStore(t))
	dir := m.path("ck")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// rename over an existing file
	write("a", "new contents")
	write("b", "old")
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if got := read("b"); got != "new contents" {
		t.Fatalf("after rename over: %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("source still there: %v", err)
	}
	// truncate, shorter and longer
	if err := os.Truncate(filepath.Join(dir, "b"), 3); err != nil {
		t.Fatal(err)
	}
	if got := read("b"); got != "new" {
		t.Fatalf("after truncate: %q", got)
	}
	if err := os.Truncate(filepath.Join(dir, "b"), 5); err != nil {
		t.Fatal(err)
	}
	if got := read("b"); got != "new\x00\x00" {
		t.Fatalf("after extending truncate: %q", got)
	}
	// unlink then recreate
	if err := os.Remove(filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	write("b", "again")
	if got := read("b"); got != "again" {
		t.Fatalf("recreated: %q", got)
	}
	// append to an existing file
	f, err := os.OpenFile(filepath.Join(dir, "b"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("+more")
	f.Close()
	if got := read("b"); got != "again+more" {
		t.Fatalf("appended: %q", got)
	}
	// chmod, utimens, symlink, mkdir/rmdir, statfs
	if err := os.Chmod(filepath.Join(dir, "b"), 0o600); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "b"), when, when); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, "b"))
	if st.Mode().Perm() != 0o600 || !st.ModTime().Equal(when) || st.Size() != 10 {
		t.Fatalf("stat: %v %v %d", st.Mode(), st.ModTime(), st.Size())
	}
	if err := os.Symlink("b", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if target, _ := os.Readlink(filepath.Join(dir, "link")); target != "b" || read("link") != "again+more" {
		t.Fatalf("symlink: %q", target)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err == nil {
		t.Fatal("rmdir of a non-empty folder succeeded")
	}
	if err := os.Remove(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(m.dir, &sfs); err != nil || sfs.Blocks == 0 {
		t.Fatalf("statfs: %v %+v", err, sfs)
	}
	// fsync makes a file visible to other openers before close
	f, _ = os.Create(filepath.Join(dir, "synced"))
	f.WriteString("durable")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := read("synced"); got != "durable" {
		t.Fatalf("after fsync: %q", got)
	}
	f.Close()
}

// Names of 256 bytes or more are ENAMETOOLONG through the mount, as on
// ext4, so every file in it can be exported to a local disk.
func TestLongNamesAsExt4(t *testing.T) {
	m := mountStore(t, newStore(t))
	local := t.TempDir()
	for _, dir := range []string{m.dir, local} {
		long := dir + "/" + strings.Repeat("n", 256)
		if err := os.WriteFile(long, nil, 0o644); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Fatalf("create of a 256-byte name in %s: %v", dir, err)
		}
		if err := os.WriteFile(long[:len(long)-1], []byte("x"), 0o644); err != nil {
			t.Fatalf("create of a 255-byte name in %s: %v", dir, err)
		}
		if err := os.Rename(long[:len(long)-1], long); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Fatalf("rename to a 256-byte name in %s: %v", dir, err)
		}
	}
}

// Two handles writing one file give what local disk gives: two O_APPEND
// writers interleave, two writers at offsets both land, and a close of one
// while the other goes on writing loses neither (it was last-close-wins).
func TestTwoWritersLikeLocalDisk(t *testing.T) {
	m := mountStoreWith(t, raceBin, newStore(t))
	local := t.TempDir()
	scenarios := map[string]func(dir string) error{
		"two O_APPEND writers": func(dir string) error {
			p := filepath.Join(dir, "log.txt")
			a, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			b, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			for i := range 50 {
				fmt.Fprintf(a, "a%d\n", i)
				fmt.Fprintf(b, "b%d\n", i)
			}
			return errors.Join(a.Close(), b.Close())
		},
		"two writers at offsets, closed in turn": func(dir string) error {
			p := filepath.Join(dir, "x.bin")
			if err := os.WriteFile(p, bytes.Repeat([]byte("."), 64), 0o644); err != nil {
				return err
			}
			a, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			b, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			a.WriteAt([]byte("AAAA"), 0)
			b.WriteAt([]byte("BBBB"), 100)
			a.WriteAt([]byte("CC"), 50)
			if err := a.Close(); err != nil {
				return err
			}
			b.WriteAt([]byte("DD"), 10)
			return b.Close()
		},
		"a streaming writer and a second one": func(dir string) error {
			p := filepath.Join(dir, "s.bin")
			a, err := os.Create(p)
			if err != nil {
				return err
			}
			a.Write(storetest.Random(5, 3<<20))
			b, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			b.WriteAt([]byte("second"), 2)
			if err := b.Close(); err != nil {
				return err
			}
			a.Write(storetest.Random(6, 1<<20))
			return a.Close()
		},
	}
	for name, run := range scenarios {
		if err := run(local); err != nil {
			t.Fatalf("%s on local disk: %v", name, err)
		}
		if err := run(m.dir); err != nil {
			t.Fatalf("%s on the mount: %v", name, err)
		}
	}
	for _, f := range []string{"log.txt", "x.bin", "s.bin"} {
		want, _ := os.ReadFile(filepath.Join(local, f))
		got, err := os.ReadFile(m.path(f))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes differ from local disk's %d (%v)", f, len(got), len(want), err)
		}
	}
}

func TestConcurrentWriters(t *testing.T) {
	m := mountStoreWith(t, raceBin, newStore(t))
	var wg sync.WaitGroup
	data := [2][]byte{make([]byte, 40<<20), make([]byte, 40<<20)}
	rand.New(rand.NewSource(4)).Read(data[0])
	rand.New(rand.NewSource(5)).Read(data[1])
	errs := make(chan error, 2)
	for i := range data {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- os.WriteFile(m.path("w"+strconv.Itoa(i)), data[i], 0o644)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range data {
		got, err := os.ReadFile(m.path("w" + strconv.Itoa(i)))
		if err != nil || !bytes.Equal(got, data[i]) {
			t.Fatalf("writer %d: content differs (%v)", i, err)
		}
	}
}

// archiveTree makes a folder with what users' trees hold: weights, a
// script, a nested folder with its own mode, symlinks (one dangling), hard
// links, a FIFO, user.* xattrs and old times.
func archiveTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "sub", "deep"), 0o750))
	must(os.WriteFile(filepath.Join(src, "sub", "w.bin"), storetest.Random(1, 3<<20), 0o640))
	must(os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(src, "sub", "deep", "notes"), []byte("n"), 0o600))
	must(os.Symlink("sub/w.bin", filepath.Join(src, "link")))
	must(os.Symlink("nowhere", filepath.Join(src, "dangling")))
	must(os.Link(filepath.Join(src, "sub", "w.bin"), filepath.Join(src, "w-hard.bin")))
	must(os.Link(filepath.Join(src, "sub", "w.bin"), filepath.Join(src, "sub", "deep", "w-hard2.bin")))
	must(syscall.Mkfifo(filepath.Join(src, "sub", "pipe"), 0o620))
	if err := syscall.Setxattr(filepath.Join(src, "sub", "w.bin"), "user.origin", []byte("hub"), 0); err != nil {
		t.Skipf("no user xattrs where the test's temp dir is: %v", err)
	}
	must(syscall.Setxattr(filepath.Join(src, "sub"), "user.kind", []byte("folder"), 0))
	must(syscall.Setxattr(filepath.Join(src, "run.sh"), "user.empty", nil, 0))
	old := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for _, p := range []string{"sub/w.bin", "run.sh", "sub/deep/notes", "sub/pipe", "sub/deep", "sub", ""} {
		must(os.Chtimes(filepath.Join(src, p), old, old))
	}
	return src
}

// describeTree is everything a copy must keep of a tree, path by path:
// type and mode, size and content hash, symlink target, mtime (not of
// symlinks), user.* xattrs, and which paths are hard links of one file.
func describeTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	firstPath := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		info, _ := d.Info()
		desc := fmt.Sprintf("%v size=%d", info.Mode(), st.Size)
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		default:
			desc += " mtime=" + time.Unix(st.Mtim.Unix()).UTC().Format(time.RFC3339Nano)
		}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " sha256=" + hex.EncodeToString(sum[:8])
			if st.Nlink > 1 {
				if first, ok := firstPath[st.Ino]; ok {
					desc += " link-of=" + first
				} else {
					firstPath[st.Ino] = rel
				}
				desc += fmt.Sprintf(" nlink=%d", st.Nlink)
			}
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			desc += " xattrs=" + userXattrs(t, p)
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("describe %s: %v", root, err)
	}
	return out
}

// userXattrs lists p's user.* attributes with their values, sorted.
func userXattrs(t *testing.T, p string) string {
	buf := make([]byte, 64<<10)
	n, err := syscall.Listxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	attrs := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := syscall.Getxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		attrs[name] = string(v[:m])
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		parts = append(parts, k+"="+attrs[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// sameDescription fails t where got differs from want, path by path.
func sameDescription(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(want)) {
		if got[p] != want[p] {
			t.Errorf("%s: %s: got  %q\n\twant %q", what, p, got[p], want[p])
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s is extra: %q", what, p, got[p])
		}
	}
}

// TestArchiveToolsRoundTrip: cp -a, rsync -aHX, tar and ckptfs import and
// export (against the running mount) copy a tree with
// symlinks, hard links, a FIFO, modes, times and user.* xattrs into the
// mount and back out, exit 0, and keep every one of them; the mount's own
// view of the tree, after a remount, is the source's too.
func TestArchiveToolsRoundTrip(t *testing.T) {
	for _, tool := range []string{"rsync", "tar", "setfattr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: make test installs it (apt-get install rsync tar attr)", tool)
		}
	}
	src := archiveTree(t)
	want := describeTree(t, src)
	copies := map[string]func(from, to string) *exec.Cmd{
		"cp -a": func(from, to string) *exec.Cmd { return exec.Command("cp", "-a", from, to) },
		"rsync -aHX": func(from, to string) *exec.Cmd {
			return exec.Command("rsync", "-aHX", from+"/", to)
		},
		"tar": func(from, to string) *exec.Cmd {
			return exec.Command("sh", "-c", `mkdir "$2" && tar --xattrs --xattrs-include='user.*' -C "$1" -cf - . | tar --xattrs --xattrs-include='user.*' -C "$2" -xpf -`, "tar", from, to)
		},
	}
	store := newStore(t)
	m := mountStore(t, store)
	// ckptfs's own import and export, which run in the mount's daemon.
	copies["ckptfs import"] = func(from, to string) *exec.Cmd {
		if rel, err := filepath.Rel(m.dir, to); err == nil && !strings.HasPrefix(rel, "..") {
			return exec.Command(ckptfsBin, "--store", store, "import", from, rel)
		}
		rel, _ := filepath.Rel(m.dir, from)
		return exec.Command(ckptfsBin, "--store", store, "export", rel, to)
	}
	for _, name := range slices.Sorted(maps.Keys(copies)) {
		copyTree := copies[name]
		in := m.path(strings.Fields(name)[0])
		back := filepath.Join(t.TempDir(), "back")
		for _, step := range [][2]string{{src, in}, {in, back}} {
			if out, err := copyTree(step[0], step[1]).CombinedOutput(); err != nil {
				t.Fatalf("%s %s -> %s: %v\n%s", name, step[0], step[1], err, out)
			}
		}
		sameDescription(t, name+" into the mount", want, describeTree(t, in))
		sameDescription(t, name+" out of the mount", want, describeTree(t, back))
	}
	m.unmount()
	m = mountStore(t, store)
	for _, name := range slices.Sorted(maps.Keys(copies)) {
		sameDescription(t, name+" after a remount", want, describeTree(t, m.path(strings.Fields(name)[0])))
	}
	m.unmount()
	fsckClean(t, store)
}

// TestPosixRulesAsExt4: the rules of a local file system that tools rely
// on (sticky folders, setgid inheritance, chmod and chown by non-owners,
// O_EXCL, renames over folders, hard links, name lengths) give the same
// results on the mount as on the local ext4 disk, as root and as another
// user. The other user's results differ from root's: the control case
// that shows the other user's steps ran as that user, on the fixtures.
func TestPosixRulesAsExt4(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to another user")
	}
	t.Parallel()
	fixtures, err := os.ReadFile("testdata/posix_fixtures.sh")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("testdata/posix_rules.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := mountStore(t, newStore(t), "--allow-other")
	local := t.TempDir()
	for _, d := range []string{m.dir, local} { // test temp dirs are 0700
		for ; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
	}
	results := map[string]string{}
	for _, where := range []struct{ name, dir string }{{"mount", m.dir}, {"ext4", local}} {
		for _, who := range []string{"root", "nobody"} {
			dir := filepath.Join(where.dir, who)
			if out, err := exec.Command("sh", "-c", string(fixtures), "sh", dir).CombinedOutput(); err != nil {
				t.Fatalf("fixtures in %s: %v\n%s", dir, err, out)
			}
			args := []string{"-c", string(rules), "sh", dir}
			cmd := exec.Command("sh", args...)
			if who == "nobody" {
				cmd = exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "sh"}, args...)...)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("rules as %s in %s: %v\n%s", who, dir, err, out)
			}
			results[where.name+" "+who] = string(out)
		}
	}
	for _, who := range []string{"root", "nobody"} {
		mnt, ext4 := strings.Split(results["mount "+who], "\n"), strings.Split(results["ext4 "+who], "\n")
		if len(mnt) != len(ext4) {
			t.Fatalf("as %s: %d steps on the mount, %d on ext4", who, len(mnt), len(ext4))
		}
		for i := range mnt {
			if mnt[i] != ext4[i] {
				t.Errorf("as %s: mount %q, ext4 %q", who, mnt[i], ext4[i])
			}
		}
	}
	if results["ext4 root"] == results["ext4 nobody"] {
		t.Fatalf("the other user's steps gave root's results: they did not run as another user\n%s", results["ext4 nobody"])
	}
	for _, step := range []string{"sticky-rm-theirs: fail", "chmod-theirs: fail", "read-private: fail", "sgid-file: ok 100 "} {
		if !strings.Contains(results["ext4 nobody"], step) {
			t.Errorf("as nobody on ext4, no %q: the fixtures are not what the rules try\n%s", step, results["ext4 nobody"])
		}
	}
	t.Logf("as root:\n%s\nas nobody:\n%s", results["ext4 root"], results["ext4 nobody"])
}
