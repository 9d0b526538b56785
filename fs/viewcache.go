package fs

import (
	"container/list"
	"sync"

	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/layout/view"
	"golang.org/x/sync/singleflight"
)

// Planned views are kept, so that a lookup of DIR@single parses the
// folder's headers once per state of the folder, not once per lookup, and
// every spec of a folder state lays out the one reading of its files
// (views.Folder) that any of its plans kept. The cache is bounded in views
// per folder (each distinct @shards=SIZE is one), in all, and in the
// memory they hold; a view's own size is bounded by view.MaxInline.
// View nodes hold no view of their own (see FS.viewOf), so these bounds
// are the bounds.
const (
	viewsPerFolder = 4
	viewsCached    = 32
	viewBytes      = 256 << 20
)

type viewID struct {
	dir  uint64
	spec view.Spec
}

// viewPlan is a planned view, or the error that planning it gave, for the
// folder state key, and the folder as read for it, or the error reading
// it gave.
type viewPlan struct {
	id        viewID
	key       string
	view      *views.View
	err       error
	folder    *views.Folder
	folderErr error
	// weight is what view holds in memory, counted once when it is kept.
	weight int64
}

// viewCache is an LRU of view plans.
type viewCache struct {
	mu     sync.Mutex
	order  *list.List // of *viewPlan, most recent first
	byID   map[viewID]*list.Element
	weight int64 // of the plans kept
	// planning runs one planning of a view, and one reading of a folder,
	// at a time per folder state: lookups that come meanwhile wait for it.
	planning singleflight.Group
	// read are the folders read whose plan is not kept yet, by folder: a
	// lookup of another spec between the read and the put of the first
	// plan finds the reading here, not in a plan, and reads no second time.
	read map[uint64]folderRead
}

type folderRead struct {
	key    string
	folder *views.Folder
	err    error
}

func newViewCache() *viewCache {
	return &viewCache{order: list.New(), byID: map[viewID]*list.Element{}, read: map[uint64]folderRead{}}
}

// get returns the plan for id if it was made for folder state key.
func (c *viewCache) get(id viewID, key string) (*viewPlan, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[id]
	if !ok || e.Value.(*viewPlan).key != key {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*viewPlan), true
}

// folder returns the folder dir as read for folder state key by any plan
// kept, and whether one is.
func (c *viewCache) folder(dir uint64, key string) (*views.Folder, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.order.Front(); e != nil; e = e.Next() {
		if p := e.Value.(*viewPlan); p.id.dir == dir && p.key == key {
			return p.folder, p.folderErr, true
		}
	}
	if r, ok := c.read[dir]; ok && r.key == key {
		return r.folder, r.err, true
	}
	return nil, nil, false
}

// keepRead keeps folder dir as read for folder state key until a plan
// keeps it.
func (c *viewCache) keepRead(dir uint64, key string, folder *views.Folder, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read[dir] = folderRead{key, folder, err}
}

// put keeps p, dropping the least recently used plans past the bounds.
func (c *viewCache) put(p *viewPlan) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[p.id]; ok {
		c.remove(e)
	}
	if p.view != nil {
		p.weight = viewWeight(p.view)
	}
	if r, ok := c.read[p.id.dir]; ok && r.key == p.key {
		delete(c.read, p.id.dir) // the plan keeps it now
	}
	c.byID[p.id] = c.order.PushFront(p)
	c.weight += p.weight
	sameFolder := 0
	for e := c.order.Front(); e != nil; {
		next := e.Next()
		if q := e.Value.(*viewPlan); q.id.dir == p.id.dir {
			if sameFolder++; sameFolder > viewsPerFolder {
				c.remove(e)
			}
		}
		e = next
	}
	for c.order.Len() > 1 && (c.order.Len() > viewsCached || c.weight > viewBytes) {
		c.remove(c.order.Back())
	}
}

func (c *viewCache) remove(e *list.Element) {
	c.order.Remove(e)
	p := e.Value.(*viewPlan)
	delete(c.byID, p.id)
	c.weight -= p.weight
}
