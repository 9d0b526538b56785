package views

import (
	"container/list"
	"fmt"
	"log/slog"
	"sync"
	"syscall"

	"github.com/ckptfs/ckptfs/layout/view"
	"golang.org/x/sync/singleflight"
)

// Planned views are kept, so that a lookup of DIR@single parses the
// folder's headers once per state of the folder, not once per lookup, and
// every spec of a folder state lays out the one reading of its files
// (Folder) that any of its plans kept. The cache is bounded in views per
// folder (each distinct @shards=SIZE is one), in all, and in the memory
// they hold; a view's own size is bounded by view.MaxInline. Nodes hold
// no view of their own (see Plans.Again), so these bounds are the bounds.
const (
	viewsPerFolder = 4
	viewsCached    = 32
	viewBytes      = 256 << 20
)

// PlanID names a view: the spec of a folder.
type PlanID struct {
	Dir  uint64
	Spec view.Spec
}

// plan is a planned view, or the error that planning it gave, for the
// folder state key, and the folder as read for it, or the error reading
// it gave.
type plan struct {
	id        PlanID
	key       string
	view      *View
	err       error
	folder    *Folder
	folderErr error
	// weight is what view holds in memory, counted once when it is kept.
	weight int64
}

// Plans plans the views of a store's folders and keeps the plans, least
// recently used dropped first.
type Plans struct {
	st      Store
	settler Settler
	log     *slog.Logger

	mu     sync.Mutex
	order  *list.List // of *plan, most recent first
	byID   map[PlanID]*list.Element
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
	folder *Folder
	err    error
}

// NewPlans plans the views of st's folders, settled by settler (see
// ReadFolder).
func NewPlans(st Store, settler Settler, log *slog.Logger) *Plans {
	return &Plans{st: st, settler: settler, log: log,
		order: list.New(), byID: map[PlanID]*list.Element{}, read: map[uint64]folderRead{}}
}

// View is the view spec of folder dirIno (at dirPath). A view is planned
// once per folder state and spec however many lookups ask for it at once,
// and lays out the folder as read for any other spec of the same state.
func (c *Plans) View(dirIno uint64, dirPath string, spec view.Spec) (*View, error) {
	entries, inodes, err := ReadFolder(c.st, c.settler, dirIno)
	if err != nil {
		return nil, err
	}
	id, key := PlanID{dirIno, spec}, FolderKey(entries, inodes)
	if p, ok := c.get(id, key); ok {
		return p.view, p.err
	}
	planned, _, _ := c.planning.Do(fmt.Sprintf("view %d %v %s", dirIno, spec, key), func() (any, error) {
		if p, ok := c.get(id, key); ok {
			return p, nil
		}
		p := &plan{id: id, key: key}
		p.folder, p.folderErr = c.folder(dirIno, key, func() (*Folder, error) {
			return Read(c.st, c.log, dirPath, entries, inodes, key)
		})
		p.err = p.folderErr
		if p.err == nil {
			p.view, p.err = p.folder.View(spec)
		}
		c.put(p)
		return p, nil
	})
	p := planned.(*plan)
	return p.view, p.err
}

// Again is the view id as planned for folder state key: kept, or planned
// again if it was dropped. Nodes hold only id and key, so the views in
// memory are the kept ones, however many names were looked up. A folder
// changed since is ESTALE: key names the old state.
func (c *Plans) Again(id PlanID, key, dirPath string) (*View, error) {
	if p, ok := c.get(id, key); ok {
		return p.view, p.err
	}
	v, err := c.View(id.Dir, dirPath, id.Spec)
	if err == nil && v.Key != key {
		return nil, syscall.ESTALE
	}
	return v, err
}

// folder is folder dir as read for folder state key: as a plan kept read
// it, or read once however many lookups ask for it at once.
func (c *Plans) folder(dir uint64, key string, read func() (*Folder, error)) (*Folder, error) {
	if folder, err, ok := c.keptFolder(dir, key); ok {
		return folder, err
	}
	got, err, _ := c.planning.Do(fmt.Sprintf("folder %d %s", dir, key), func() (any, error) {
		if folder, err, ok := c.keptFolder(dir, key); ok {
			return folder, err
		}
		folder, err := read()
		c.keepRead(dir, key, folder, err)
		return folder, err
	})
	folder, _ := got.(*Folder)
	return folder, err
}

// get returns the plan for id if it was made for folder state key.
func (c *Plans) get(id PlanID, key string) (*plan, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[id]
	if !ok || e.Value.(*plan).key != key {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*plan), true
}

// keptFolder returns the folder dir as read for folder state key by any
// plan kept, and whether one is.
func (c *Plans) keptFolder(dir uint64, key string) (*Folder, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.order.Front(); e != nil; e = e.Next() {
		if p := e.Value.(*plan); p.id.Dir == dir && p.key == key {
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
func (c *Plans) keepRead(dir uint64, key string, folder *Folder, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read[dir] = folderRead{key, folder, err}
}

// put keeps p, dropping the least recently used plans past the bounds.
func (c *Plans) put(p *plan) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[p.id]; ok {
		c.remove(e)
	}
	if p.view != nil {
		p.weight = viewWeight(p.view)
	}
	if r, ok := c.read[p.id.Dir]; ok && r.key == p.key {
		delete(c.read, p.id.Dir) // the plan keeps it now
	}
	c.byID[p.id] = c.order.PushFront(p)
	c.weight += p.weight
	sameFolder := 0
	for e := c.order.Front(); e != nil; {
		next := e.Next()
		if q := e.Value.(*plan); q.id.Dir == p.id.Dir {
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

func (c *Plans) remove(e *list.Element) {
	c.order.Remove(e)
	p := e.Value.(*plan)
	delete(c.byID, p.id)
	c.weight -= p.weight
}

// viewWeight is what a planned view holds in memory, roughly: its
// synthesized headers and its extent maps.
func viewWeight(v *View) int64 {
	var n int64
	for _, f := range v.Files {
		n += 64 * int64(len(f.Extents))
		for _, e := range f.Extents {
			n += int64(len(e.Inline))
			if e.Tile != nil {
				n += 32 * int64(len(e.Tile.Parts))
			}
		}
	}
	return n
}
