package fs

import (
	"fmt"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/layout/view"
)

// view is the view spec of folder dirIno (at dirPath) through the mount's
// cache of planned views. A view is planned once per folder state and
// spec however many lookups ask for it at once, and lays out the folder
// as read for any other spec of the same state.
func (f *FS) view(dirIno uint64, dirPath string, spec view.Spec) (*views.View, error) {
	entries, inodes, err := views.ReadFolder(f.store, f.writes, dirIno)
	if err != nil {
		return nil, err
	}
	id, key := viewID{dirIno, spec}, views.FolderKey(entries, inodes)
	if p, ok := f.views.get(id, key); ok {
		return p.view, p.err
	}
	planned, _, _ := f.views.planning.Do(fmt.Sprintf("view %d %v %s", dirIno, spec, key), func() (any, error) {
		if p, ok := f.views.get(id, key); ok {
			return p, nil
		}
		p := &viewPlan{id: id, key: key}
		p.folder, p.folderErr = f.folder(dirIno, key, func() (*views.Folder, error) {
			return views.Read(f.store, f.log, dirPath, entries, inodes, key)
		})
		p.err = p.folderErr
		if p.err == nil {
			p.view, p.err = p.folder.View(spec)
		}
		f.views.put(p)
		return p, nil
	})
	p := planned.(*viewPlan)
	return p.view, p.err
}

// folder is folder dir as read for folder state key: as a plan kept read
// it, or read once however many lookups ask for it at once.
func (f *FS) folder(dir uint64, key string, read func() (*views.Folder, error)) (*views.Folder, error) {
	if folder, err, ok := f.views.folder(dir, key); ok {
		return folder, err
	}
	got, err, _ := f.views.planning.Do(fmt.Sprintf("folder %d %s", dir, key), func() (any, error) {
		if folder, err, ok := f.views.folder(dir, key); ok {
			return folder, err
		}
		folder, err := read()
		f.views.keepRead(dir, key, folder, err)
		return folder, err
	})
	folder, _ := got.(*views.Folder)
	return folder, err
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
