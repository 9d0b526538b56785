package cache

import (
	"bytes"
	"log/slog"
	"math/rand"
	"os"
	"testing"
	"time"
)

func TestAddSpanMerges(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		covered := make([]bool, 200)
		var spans []span
		for k := 0; k < 1+r.Intn(30); k++ {
			lo := r.Int63n(190)
			hi := lo + 1 + r.Int63n(10)
			spans = addSpan(spans, span{lo, hi})
			for i := lo; i < hi; i++ {
				covered[i] = true
			}
		}
		// The spans are sorted, apart, and cover exactly what was added.
		var want []span
		for i := int64(0); i < 200; i++ {
			if covered[i] && (i == 0 || !covered[i-1]) {
				want = append(want, span{i, i + 1})
			} else if covered[i] {
				want[len(want)-1].hi = i + 1
			}
		}
		if len(spans) != len(want) {
			t.Fatalf("spans %v, want %v", spans, want)
		}
		for i := range want {
			if spans[i] != want[i] {
				t.Fatalf("spans %v, want %v", spans, want)
			}
		}
	}
}

// Pieces written out of order make a complete copy; a second fill of the
// same content is refused while one runs and once the copy exists.
func TestHotFillOutOfOrder(t *testing.T) {
	hot, err := OpenHotFiles(t.TempDir(), 1<<30, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(3, 6<<20+123)
	fill := hot.StartFill("k", int64(len(data)))
	if fill == nil {
		t.Fatal("no fill started")
	}
	if hot.StartFill("k", int64(len(data))) != nil {
		t.Fatal("second fill of one key")
	}
	r := rand.New(rand.NewSource(4))
	const piece = 128 << 10
	order := r.Perm((len(data) + piece - 1) / piece)
	for _, i := range order {
		lo := i * piece
		fill.Write(data[lo:min(lo+piece, len(data))], int64(lo))
	}
	var f *os.File
	for deadline := time.Now().Add(10 * time.Second); f == nil && time.Now().Before(deadline); {
		if f = hot.Open("k"); f == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if f == nil {
		t.Fatal("copy never became ready")
	}
	defer f.Close()
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, data) {
		t.Fatal("copy differs")
	}
	for hot.busy("k") { // fsynced and renamed in the background
		time.Sleep(10 * time.Millisecond)
	}
	if hot.StartFill("k", int64(len(data))) != nil {
		t.Fatal("fill of a key that has a copy")
	}
}

// Copies past the budget go, least recently used first.
func TestHotFilesEvict(t *testing.T) {
	dir := t.TempDir()
	hot, err := OpenHotFiles(dir, 12<<20, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"a", "b", "c"} {
		data := randomBytes(int64(i), 5<<20)
		fill := hot.StartFill(key, int64(len(data)))
		fill.Write(data, 0)
		for hot.busy(key) {
			time.Sleep(10 * time.Millisecond)
		}
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

func (h *HotFiles) busy(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.filling[key]
}

// A copy mostly read is completed from the source when its readers go; one
// barely read is dropped.
func TestHotFillFinish(t *testing.T) {
	hot, err := OpenHotFiles(t.TempDir(), 1<<30, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(5, 8<<20+7)
	mostly := hot.StartFill("mostly", int64(len(data)))
	mostly.Write(data[:1<<20], 0)
	mostly.Write(data[4<<20:6<<20], 4<<20) // over a quarter read, gaps between and after
	mostly.Finish(bytes.NewReader(data))
	barely := hot.StartFill("barely", int64(len(data)))
	barely.Write(data[:2<<20-1], 0)
	barely.Finish(bytes.NewReader(data))
	for hot.busy("mostly") || hot.busy("barely") {
		time.Sleep(10 * time.Millisecond)
	}
	if got, err := os.ReadFile(hot.path("mostly")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("mostly read copy: %v, equal %v", err, bytes.Equal(got, data))
	}
	if entries, _ := os.ReadDir(hot.dir); len(entries) != 1 {
		t.Fatalf("%d files in the hot directory, want the one copy", len(entries))
	}
}
