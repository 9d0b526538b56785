package fs

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/view"
)

// Lookups of a folder's views at once, of one spec and of several, plan
// each view once and read the folder once: the specs share its reading.
func TestOnePlanAtATime(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	dir, err := st.Namespace().Create(meta.RootIno, "ck", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	storetest.AddFile(t, st, "model.safetensors", layouttest.TinyTensorsHeader(4_000, 10))
	if err := st.Namespace().Rename(meta.RootIno, "model.safetensors", dir.Ino, "model.safetensors", 0); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer // slog's handler writes a record at a time
	fsys := &FS{store: st, log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})), views: newViewCache()}

	specs := []view.Spec{{}, {Shards: true, MaxShardSize: 1000}, {Shards: true, MaxShardSize: 2000}}
	got := make([]*views.View, 4*len(specs))
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := fsys.view(dir.Ino, "/ck", specs[i%len(specs)])
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		}()
	}
	wg.Wait()
	for i, v := range got {
		if v != got[i%len(specs)] || v.Folder != got[0].Folder {
			t.Fatalf("lookup %d got a view of its own", i)
		}
	}
	if n := strings.Count(log.String(), "views planned"); n != 1 {
		t.Fatalf("the folder was read %d times:\n%s", n, log.String())
	}
}

// A folder's reading is kept from the moment it is read: a lookup of
// another spec that comes after the read and before the first plan is
// kept reads the folder no second time (under load it did: two plans of
// one folder, its warnings twice).
func TestFolderReadIsKeptBeforeItsPlan(t *testing.T) {
	fsys := &FS{views: newViewCache()}
	reads := 0
	read := func() (*views.Folder, error) { reads++; return &views.Folder{Key: "k"}, nil }
	a, _ := fsys.folder(7, "k", read)
	b, _ := fsys.folder(7, "k", read)
	if reads != 1 || a != b {
		t.Fatalf("read %d times, the same reading: %v", reads, a == b)
	}
	if _, _, ok := fsys.views.folder(7, "another state"); ok {
		t.Fatal("a reading served for another state of the folder")
	}
	fsys.views.put(&viewPlan{id: viewID{dir: 7}, key: "k", folder: a})
	if len(fsys.views.read) != 0 {
		t.Fatal("the reading is kept twice once a plan keeps it")
	}
	if got, _, ok := fsys.views.folder(7, "k"); !ok || got != a {
		t.Fatal("the plan does not serve the reading")
	}
}
