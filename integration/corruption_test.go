package integration

// A store damaged on disk: bytes flipped in packs and in Badger's tables.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// Bytes flipped inside the pack files on disk: reads of the damaged files
// fail with EIO and never return other bytes, the other files still read
// back whole, the daemon stays up, and fsck names each damaged file and
// chunk.
func TestCorruptPacks(t *testing.T) {
	store, files := corruptionStore(t)
	packs, _ := filepath.Glob(filepath.Join(store, "packs", "*.pack"))
	r := rand.New(rand.NewSource(10))
	const flips = 3
	for i := 0; i < flips; i++ {
		p := packs[r.Intn(len(packs))]
		st, _ := os.Stat(p)
		flipByte(t, p, r.Int63n(st.Size()))
	}
	damaged := readAfterDamage(t, store, files)
	if len(damaged) == 0 || len(damaged) > flips {
		t.Fatalf("%d files unreadable after %d flipped bytes", len(damaged), flips)
	}
	out, err := ckptfs(t, store, "fsck")
	if err == nil {
		t.Fatalf("fsck passed a damaged store:\n%s", out)
	}
	for _, name := range damaged {
		if !regexp.MustCompile(`problem: chunk [0-9a-f]+ \(used by ` + name + `\)`).MatchString(out) {
			t.Fatalf("fsck does not name %s and its chunk:\n%s", name, out)
		}
	}
}

// Bytes flipped inside Badger's tables, which hold the namespace and where
// each chunk is. Badger's read path would take a damaged block for keys
// that are not there (a file would vanish rather than fail), so a store
// with a damaged table is refused with the table named, and fsck reports
// it. Nothing is ever served from it.
func TestCorruptTables(t *testing.T) {
	store, _ := corruptionStore(t)
	tables, _ := filepath.Glob(filepath.Join(store, "db", "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no tables in the store")
	}
	r := rand.New(rand.NewSource(11))
	tbl := tables[r.Intn(len(tables))]
	flipByte(t, tbl, r.Int63n(tableDataLen(t, tbl)))
	named := regexp.MustCompile(`damaged table \S*` + regexp.QuoteMeta(filepath.Base(tbl)))
	for _, args := range [][]string{{"mount", filepath.Join(t.TempDir())}, {"ls"}, {"fsck"}} {
		out, err := ckptfs(t, store, args...)
		if err == nil || !named.MatchString(out) {
			t.Fatalf("ckptfs %s on a store with a damaged table block: err %v, output:\n%s", args[0], err, out)
		}
	}

	// A damaged table index keeps Badger from opening the store at all.
	flipByte(t, tbl, tableDataLen(t, tbl)+1)
	out, err := ckptfs(t, store, "ls")
	if err == nil || !strings.Contains(out, filepath.Base(tbl)) {
		t.Fatalf("ls on a store with a damaged table index: err %v, output:\n%s", err, out)
	}
}

// corruptionStore writes a dozen 2-4 MiB files through a mount and returns
// the unmounted store and the files by name.
func corruptionStore(t *testing.T) (string, map[string][]byte) {
	store := newStore(t)
	m := mountStore(t, store)
	r := rand.New(rand.NewSource(12))
	files := map[string][]byte{}
	for i := 0; i < 12; i++ {
		data := make([]byte, 2<<20+r.Intn(2<<20))
		r.Read(data)
		name := fmt.Sprintf("f%02d", i)
		files[name] = data
		if err := os.WriteFile(m.path(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.unmount()
	return store, files
}

func flipByte(t *testing.T, path string, off int64) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("%s at %d: %v", path, off, err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// tableDataLen is the length of a Badger table's data blocks: the file ends
// with the index, its length, the index checksum and its length.
func tableDataLen(t *testing.T, path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := len(b) - 4
	end -= int(binary.BigEndian.Uint32(b[end:])) + 4
	end -= int(binary.BigEndian.Uint32(b[end:]))
	if end <= 0 {
		t.Fatalf("%s: cannot find the table index", path)
	}
	return int64(end)
}

// readAfterDamage mounts the damaged store and reads every file: each reads
// back whole or fails with EIO. It returns the files that failed, after
// checking that the daemon is still up.
func readAfterDamage(t *testing.T, store string, files map[string][]byte) []string {
	m := mountStore(t, store)
	defer m.unmount()
	var damaged []string
	for name, want := range files {
		got, err := os.ReadFile(m.path(name))
		switch {
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("%s: read returned wrong bytes", name)
		case err != nil && !errors.Is(err, syscall.EIO):
			t.Fatalf("%s: %v, want EIO", name, err)
		case err != nil:
			damaged = append(damaged, name)
		}
	}
	if exited(m.pid()) {
		t.Fatal("daemon died")
	}
	t.Logf("%d of %d files unreadable", len(damaged), len(files))
	return damaged
}
