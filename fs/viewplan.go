package fs

import (
	"syscall"

	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/layout"
)

// view is BuildView through the mount's cache of planned views.
func (f *FS) view(dirIno uint64, dirPath string, spec layout.ViewSpec) (*views.View, error) {
	entries, inodes, err := views.ReadFolder(f.store, f.writes, dirIno)
	if err != nil {
		return nil, err
	}
	id, key := viewID{dirIno, spec}, views.FolderKey(entries, inodes)
	if p, ok := f.views.get(id, key); ok {
		return p.view, p.err
	}
	v, err := views.Plan(f.store, f.log, dirPath, entries, inodes, key, spec)
	f.views.put(&viewPlan{id: id, key: key, view: v, err: err})
	return v, err
}

// viewOf is the view id as planned for folder state key: from the cache,
// or planned again if the cache dropped it. Nodes hold only id and key, so
// the views in memory are the cache's, however many names were looked up.
// A folder changed since is ESTALE: key names the old state.
func (f *FS) viewOf(id viewID, key, dirPath string) (*views.View, error) {
	if p, ok := f.views.get(id, key); ok {
		return p.view, p.err
	}
	v, err := f.view(id.dir, dirPath, id.spec)
	if err == nil && v.Key != key {
		return nil, syscall.ESTALE
	}
	return v, err
}

// viewWeight is what a planned view holds in memory, roughly: its
// synthesized headers and its extent maps.
func viewWeight(v *views.View) int64 {
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
