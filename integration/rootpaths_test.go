package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The CLI's rm and export run in the mount's daemon, as root, on paths
// other users may change while they run. These tests have uid 65534 swap
// a folder for a symlink to a folder of root's, outside the mount, as
// fast as it can, while root runs the command: nothing outside may be
// removed or created. Each has a control: root doing the same by path,
// as the daemon did, is led outside within a few tries, so the swaps do
// land where they should.

// asNobodyLoop runs a Python loop as uid 65534 in the background, for the
// test's duration.
func asNobodyLoop(t *testing.T, script string, args ...string) {
	t.Helper()
	cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}

// flipScript puts a folder and a symlink in turn at one name, over and
// over (the mount has no RENAME_EXCHANGE).
const flipScript = `
import os, sys
name, folder, link = sys.argv[1:]
while True:
    for src, dst in ((name, folder), (link, name), (name, link), (folder, name)):
        try:
            os.rename(src, dst)
        except OSError:
            pass
`

// TestRmThroughAFlippingSymlink: uid 65534 owns u, holding a folder a with
// b0, b1... in it and a symlink l to root's folder outside, which holds
// the same names; it puts one and the other at u/a without pause while
// root runs 'ckptfs rm u/a/bN' against the live mount, 100 times.
func TestRmThroughAFlippingSymlink(t *testing.T) {
	const tries = 100
	m := sharedMount(t)
	outside := t.TempDir()
	u := m.path("u")
	if err := os.Mkdir(u, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(u, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 2 * tries {
		names = append(names, fmt.Sprintf("%s/a/b%d", u, i))
		if err := os.Mkdir(filepath.Join(outside, fmt.Sprint("b", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := asNobody("mkdir", append([]string{"-p"}, names...)...); err != nil {
		t.Fatalf("the other user cannot make its folders: %v %s", err, out)
	}
	if out, err := asNobody("ln", "-s", outside, filepath.Join(u, "l")); err != nil {
		t.Fatalf("the other user cannot make its symlink: %v %s", err, out)
	}
	asNobodyLoop(t, flipScript, filepath.Join(u, "a"), filepath.Join(u, "d"), filepath.Join(u, "l"))
	removedOutside := func() []string {
		var gone []string
		for i := range 2 * tries {
			if _, err := os.Lstat(filepath.Join(outside, fmt.Sprint("b", i))); err != nil {
				gone = append(gone, fmt.Sprint("b", i))
			}
		}
		return gone
	}
	// Control: root removing by path, as the daemon did after its check in
	// the store, is led outside.
	led := false
	for i := 0; i < tries && !led; i++ {
		os.RemoveAll(filepath.Join(u, "a", fmt.Sprint("b", i)))
		led = len(removedOutside()) > 0
	}
	if !led {
		t.Fatalf("control: %d removals by path through the flipping folder never reached outside", tries)
	}
	for _, name := range removedOutside() {
		os.Mkdir(filepath.Join(outside, name), 0o755)
	}
	removed := 0
	for i := tries; i < 2*tries; i++ {
		if _, err := ckptfs(t, m.store, "rm", fmt.Sprintf("u/a/b%d", i)); err == nil {
			removed++
		}
		if gone := removedOutside(); len(gone) > 0 {
			t.Fatalf("'ckptfs rm' removed %s outside the mount (try %d)", gone, i-tries+1)
		}
	}
	t.Logf("%d of %d removals done, the rest refused", removed, tries)
	// Control: with the folder left in place, rm removes what it is
	// asked to.
	if err := os.MkdirAll(m.path("v", "a", "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustCkptfs(t, m.store, "rm", "v/a/b")
	if _, err := os.Lstat(m.path("v", "a", "b")); !os.IsNotExist(err) {
		t.Fatalf("control: v/a/b still there after rm: %v", err)
	}
}

// exportSwapScript waits for w/out0, w/out1... to appear in turn, and
// as soon as one does renames it aside and puts a symlink to root's
// folder outside in its place.
const exportSwapScript = `
import os, sys
w, outside = sys.argv[1], sys.argv[2]
i = 0
while True:
    dst = "%s/out%d" % (w, i)
    try:
        os.rename(dst, dst + ".moved")
    except OSError:
        continue
    try:
        os.symlink(outside, dst)
    except OSError:
        pass
    i += 1
`

// TestExportIntoAFolderAnotherUserWrites: root exports a checkpoint of 40
// files (12 MB) into w/outN, w a folder of uid 65534's, which swaps each
// outN for a symlink to root's folder outside as soon as it appears, 20
// times.
func TestExportIntoAFolderAnotherUserWrites(t *testing.T) {
	const tries = 20
	m := sharedMount(t)
	for i := range 40 {
		p := m.path("ck", fmt.Sprint("f", i))
		if i%10 == 9 {
			p = m.path("ck", "sub", fmt.Sprint("f", i))
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(strings.Repeat(fmt.Sprint(i), 150_000)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside, w := t.TempDir(), filepath.Join(t.TempDir(), "w")
	openToAll(filepath.Dir(w))
	if err := os.Mkdir(w, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(w, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	// Control: an export into a folder no one else writes is whole.
	quiet := filepath.Join(t.TempDir(), "quiet")
	mustCkptfs(t, m.store, "export", "ck", quiet)
	sameTrees(t, m.path("ck"), quiet)

	asNobodyLoop(t, exportSwapScript, w, outside)
	madeOutside := func() []string { return strings.Fields(listNames(t, outside)) }
	// Control: root making the same tree by path, as export did, is led
	// outside.
	next := 0
	for led := false; !led; next++ {
		if next == tries {
			t.Fatalf("control: %d copies by path into the swapped folders never reached outside", tries)
		}
		dst := filepath.Join(w, fmt.Sprint("out", next))
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range 40 {
			os.WriteFile(filepath.Join(dst, fmt.Sprint("f", j)), nil, 0o644)
		}
		led = len(madeOutside()) > 0
	}
	for _, name := range madeOutside() {
		os.Remove(filepath.Join(outside, name))
	}
	exported := 0
	for range tries {
		out, err := ckptfs(t, m.store, "export", "ck", filepath.Join(w, fmt.Sprint("out", next)))
		if made := madeOutside(); len(made) > 0 {
			t.Fatalf("'ckptfs export' made %s outside its destination (out%d: %v %s)", made, next, err, out)
		}
		if err == nil {
			exported++
			sameTrees(t, m.path("ck"), filepath.Join(w, fmt.Sprint("out", next, ".moved")))
		} else {
			t.Logf("out%d: %v %s", next, err, out)
		}
		next++
	}
	t.Logf("%d of %d exports done, the rest refused", exported, tries)
}
