package fs

import (
	"testing"

	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/layout/view"
)

func TestViewCacheBounds(t *testing.T) {
	c := newViewCache()
	shards := func(n int64) view.Spec { return view.Spec{Shards: true, MaxShardSize: n} }
	for n := int64(1); n <= viewsPerFolder+2; n++ {
		c.put(&viewPlan{id: viewID{7, shards(n)}, key: "k", view: &views.View{}})
	}
	for n := int64(1); n <= viewsPerFolder+2; n++ {
		_, ok := c.get(viewID{7, shards(n)}, "k")
		if want := n > 2; ok != want {
			t.Errorf("@shards=%d kept %v, want %v", n, ok, want)
		}
	}
	if _, ok := c.get(viewID{7, shards(6)}, "changed"); ok {
		t.Error("a plan served for another folder state")
	}
	for dir := uint64(100); dir < 100+viewsCached+5; dir++ {
		c.put(&viewPlan{id: viewID{dir, view.Spec{}}, key: "k"})
	}
	if c.order.Len() != viewsCached || len(c.byID) != viewsCached {
		t.Fatalf("%d plans kept (%d indexed), bound %d", c.order.Len(), len(c.byID), viewsCached)
	}
	if _, ok := c.get(viewID{100 + viewsCached + 4, view.Spec{}}, "k"); !ok {
		t.Error("the newest plan was dropped")
	}
}

func TestViewCacheBoundsMemory(t *testing.T) {
	c := newViewCache()
	heavy := func() *views.View {
		return &views.View{Files: []view.File{{Extents: []view.Extent{{Inline: make([]byte, 60<<20)}}}}}
	}
	for dir := uint64(1); dir <= 10; dir++ {
		c.put(&viewPlan{id: viewID{dir, view.Spec{}}, key: "k", view: heavy()})
	}
	if c.weight > viewBytes || c.order.Len() != viewBytes/(60<<20) {
		t.Fatalf("%d plans of 60 MiB kept, %d bytes; bound %d", c.order.Len(), c.weight, viewBytes)
	}
	if _, ok := c.get(viewID{10, view.Spec{}}, "k"); !ok {
		t.Fatal("the newest plan was dropped")
	}
}
