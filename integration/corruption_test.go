package integration

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
)

// Bytes flipped inside Badger's value log on disk: reads of the damaged
// files fail with EIO and never return other bytes, the other files still
// read back whole, the daemon stays up, and fsck names each damaged file and
// chunk.
func TestCorruptValueLog(t *testing.T) {
	store := newStore(t)
	m := mountStore(t, store)
	r := rand.New(rand.NewSource(10))
	files := map[string][]byte{}
	for i := 0; i < 12; i++ {
		data := make([]byte, 2<<20+r.Intn(2<<20))
		r.Read(data)
		name := "f" + string(rune('a'+i))
		files[name] = data
		if err := os.WriteFile(m.path(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.unmount()

	vlogs, _ := filepath.Glob(filepath.Join(store, "db", "*.vlog"))
	var biggest string
	var size int64
	for _, v := range vlogs {
		if st, _ := os.Stat(v); st.Size() > size {
			biggest, size = v, st.Size()
		}
	}
	f, err := os.OpenFile(biggest, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	const flips = 3
	for i := 0; i < flips; i++ {
		off := 4096 + r.Int63n(size-8192)
		b := make([]byte, 1)
		f.ReadAt(b, off)
		b[0] ^= 0x5a
		f.WriteAt(b, off)
	}
	f.Close()

	m = mountStore(t, store)
	pid := m.pid()
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
	if len(damaged) == 0 || len(damaged) > flips {
		t.Fatalf("%d files unreadable after %d flipped bytes", len(damaged), flips)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("daemon died")
	}
	m.unmount()
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
