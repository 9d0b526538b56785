package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/storetest"
)

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
