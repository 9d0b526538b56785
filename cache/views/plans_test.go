package views

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
	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/view"
)

func TestPlansBounds(t *testing.T) {
	c := NewPlans(nil, nil, nil)
	shards := func(n int64) view.Spec { return view.Spec{Shards: true, MaxShardSize: n} }
	for n := int64(1); n <= viewsPerFolder+2; n++ {
		c.put(&plan{id: PlanID{7, shards(n)}, key: "k", view: &View{}})
	}
	for n := int64(1); n <= viewsPerFolder+2; n++ {
		_, ok := c.get(PlanID{7, shards(n)}, "k")
		if want := n > 2; ok != want {
			t.Errorf("@shards=%d kept %v, want %v", n, ok, want)
		}
	}
	if _, ok := c.get(PlanID{7, shards(6)}, "changed"); ok {
		t.Error("a plan served for another folder state")
	}
	for dir := uint64(100); dir < 100+viewsCached+5; dir++ {
		c.put(&plan{id: PlanID{dir, view.Spec{}}, key: "k"})
	}
	if c.order.Len() != viewsCached || len(c.byID) != viewsCached {
		t.Fatalf("%d plans kept (%d indexed), bound %d", c.order.Len(), len(c.byID), viewsCached)
	}
	if _, ok := c.get(PlanID{100 + viewsCached + 4, view.Spec{}}, "k"); !ok {
		t.Error("the newest plan was dropped")
	}
}

func TestPlansBoundMemory(t *testing.T) {
	c := NewPlans(nil, nil, nil)
	heavy := func() *View {
		return &View{Files: []view.File{{Extents: []view.Extent{{Inline: make([]byte, 60<<20)}}}}}
	}
	for dir := uint64(1); dir <= 10; dir++ {
		c.put(&plan{id: PlanID{dir, view.Spec{}}, key: "k", view: heavy()})
	}
	if c.weight > viewBytes || c.order.Len() != viewBytes/(60<<20) {
		t.Fatalf("%d plans of 60 MiB kept, %d bytes; bound %d", c.order.Len(), c.weight, viewBytes)
	}
	if _, ok := c.get(PlanID{10, view.Spec{}}, "k"); !ok {
		t.Fatal("the newest plan was dropped")
	}
}

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
	plans := NewPlans(st, nil, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})))

	specs := []view.Spec{{}, {Shards: true, MaxShardSize: 1000}, {Shards: true, MaxShardSize: 2000}}
	got := make([]*View, 4*len(specs))
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := plans.View(dir.Ino, "/ck", specs[i%len(specs)])
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
	c := NewPlans(nil, nil, nil)
	reads := 0
	read := func() (*Folder, error) { reads++; return &Folder{Key: "k"}, nil }
	a, _ := c.folder(7, "k", read)
	b, _ := c.folder(7, "k", read)
	if reads != 1 || a != b {
		t.Fatalf("read %d times, the same reading: %v", reads, a == b)
	}
	if _, _, ok := c.keptFolder(7, "another state"); ok {
		t.Fatal("a reading served for another state of the folder")
	}
	c.put(&plan{id: PlanID{Dir: 7}, key: "k", folder: a})
	if len(c.read) != 0 {
		t.Fatal("the reading is kept twice once a plan keeps it")
	}
	if got, _, ok := c.keptFolder(7, "k"); !ok || got != a {
		t.Fatal("the plan does not serve the reading")
	}
}
