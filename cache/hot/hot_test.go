package hot

import (
	"bytes"
	"log/slog"
	"math/rand"
	"os"
	"testing"
	"time"
)

// A copy becomes readable once complete and lands under its key; a second
// copy of the same key is not made.
func TestHotCopy(t *testing.T) {
	hot, err := Open(t.TempDir(), 1<<30, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 6<<20+123)
	rand.New(rand.NewSource(3)).Read(data)
	hot.Copy("k", int64(len(data)), bytes.NewReader(data))
	hot.Copy("k", int64(len(data)), bytes.NewReader(make([]byte, len(data)))) // a no-op
	waitCopies(hot)
	f := hot.Open("k")
	if f == nil {
		t.Fatal("no copy")
	}
	defer f.Close()
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, data) {
		t.Fatal("copy differs")
	}
	if f.Name() != hot.path("k") {
		t.Fatalf("copy at %s, not renamed into place", f.Name())
	}
	hot.Copy("small", minHotSize-1, bytes.NewReader(data))
	waitCopies(hot)
	if hot.Open("small") != nil {
		t.Fatal("copy of a file below the minimum size")
	}
}

// Copies past the budget go, least recently used first.
func TestHotFilesEvict(t *testing.T) {
	hot, err := Open(t.TempDir(), 12<<20, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"a", "b", "c"} {
		data := make([]byte, 5<<20)
		rand.New(rand.NewSource(int64(i))).Read(data)
		hot.Copy(key, int64(len(data)), bytes.NewReader(data))
		waitCopies(hot)
		if key == "b" {
			os.Chtimes(hot.path("a"), time.Now(), time.Now()) // a used after b
		}
	}
	if _, err := os.Stat(hot.path("b")); err == nil {
		t.Fatal("b, least recently used, kept")
	}
	for _, key := range []string{"a", "c"} {
		if _, err := os.Stat(hot.path(key)); err != nil {
			t.Fatalf("%s evicted: %v", key, err)
		}
	}
}

// Drop frees what the store's disk needs, least recently used first, and
// no more.
func TestHotFilesDrop(t *testing.T) {
	dir := t.TempDir()
	hot, err := Open(dir, 1<<30, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"old", "mid", "new"} {
		os.WriteFile(hot.path(key), make([]byte, 3<<20), 0o600)
		at := time.Now().Add(time.Duration(i-3) * time.Minute)
		os.Chtimes(hot.path(key), at, at)
	}
	if freed := hot.Drop(4 << 20); freed != 6<<20 {
		t.Fatalf("dropped %d bytes for 4 MiB, want two 3 MiB copies", freed)
	}
	if _, err := os.Stat(hot.path("new")); err != nil {
		t.Fatalf("the newest copy went: %v", err)
	}
	if freed := hot.Drop(1 << 30); freed != 3<<20 {
		t.Fatalf("dropped %d bytes of the one copy left", freed)
	}
}

// waitCopies waits until no copy is being made.
func waitCopies(h *Files) {
	for {
		h.mu.Lock()
		n := len(h.copying)
		h.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
