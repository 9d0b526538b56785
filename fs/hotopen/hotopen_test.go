package hotopen

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/hot"
)

// The second open through the page cache makes a copy; once it is made,
// opens are handed it while no open uses the page cache and the content is
// still the node's, and the last release closes it.
func TestOpensHandOutTheCopy(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	files, err := hot.Open(t.TempDir(), 1<<30, log)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 5<<20)
	rand.New(rand.NewSource(1)).Read(data)
	var mu sync.Mutex
	var o Opens
	o.Guard(&mu)
	current := func() bool { return true }

	mu.Lock()
	o.CountOpen(files, "k", int64(len(data)), bytes.NewReader(data))
	mu.Unlock()
	if f := files.Open("k"); f != nil {
		f.Close()
		t.Fatal("a copy of a file opened once")
	}
	mu.Lock()
	o.CountOpen(files, "k", int64(len(data)), bytes.NewReader(data))
	mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if f := files.Open("k"); f != nil {
			f.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no copy after the second open")
		}
	}

	if o.Open(files, NoCopy, current, "f", log) != nil {
		t.Fatal("staged content handed a copy")
	}
	o.Cached = 1
	if o.Open(files, "k", current, "f", log) != nil {
		t.Fatal("a copy handed out beside an open that uses the page cache")
	}
	o.Cached = 0
	if o.Open(files, "k", func() bool { return false }, "f", log) != nil {
		t.Fatal("a copy handed out of content the node no longer has")
	}
	a := o.Open(files, "k", current, "f", log)
	b := o.Open(files, "k", current, "f", log)
	if a == nil || b == nil || !o.Hot() {
		t.Fatal("no hot open of a copy made")
	}
	if fd, ok := a.PassthroughFd(); !ok || fd <= 0 {
		t.Fatalf("passthrough fd %d", fd)
	}
	got := make([]byte, 1000)
	if r, errno := b.Read(context.Background(), got, 4000); errno != 0 {
		t.Fatal(errno)
	} else if res, _ := r.Bytes(nil); !bytes.Equal(res, data[4000:5000]) {
		t.Fatal("the copy reads other bytes")
	}
	a.Release(context.Background())
	mu.Lock()
	if o.WaitClosed() {
		t.Fatal("closed while an open remains")
	}
	mu.Unlock()
	b.Release(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if !o.WaitClosed() || o.Hot() || o.file != nil {
		t.Fatal("the copy still open after the last release")
	}
}
