package fs

import (
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"syscall"

	"github.com/ckptfs/ckptfs/cache"
	"github.com/ckptfs/ckptfs/layout"
)

// View is a folder's weights planned as a view, with what it needs to read
// them. It is a snapshot: the stored contents it reads never change.
type View struct {
	Files   []layout.ViewFile
	Sources []*cache.FileReader // by layout.Extent.Source
	Extra   []Passthrough       // the folder's other files, shown as they are
	Key     string              // changes whenever the folder's files change
}

// Passthrough is a non-weight file of the folder.
type Passthrough struct {
	Name  string
	Inode *cache.Inode
}

// maxIndexSize bounds the index.json files read to find shards.
const maxIndexSize = 64 << 20

// folderKey identifies the state of a folder's entries: any commit, rename
// or unlink changes it. It names the content of every file, not just its
// size and time, because hot copies of view files are kept under it.
func folderKey(entries []cache.DirEntry, inodes map[string]*cache.Inode) string {
	parts := make([]string, 0, 4*len(entries))
	for _, e := range entries {
		in := inodes[e.Name]
		parts = append(parts, e.Name, fmt.Sprint(in.Ino), fmt.Sprint(in.Mtime), cache.ContentKey(&in.Content))
	}
	return cache.DerivedKey(parts...)
}

// HasWeights reports whether a folder holds any safetensors file.
func HasWeights(entries []cache.DirEntry) bool {
	for _, e := range entries {
		if e.Mode == syscall.S_IFREG && strings.HasSuffix(e.Name, ".safetensors") {
			return true
		}
	}
	return false
}

// BuildView plans the view spec of folder dirIno (at dirPath, for messages).
// Malformed weight files are left out with a warning; syscall.ENOENT when
// the folder has no usable weights.
func BuildView(store *cache.Store, log *slog.Logger, dirIno uint64, dirPath string, spec layout.ViewSpec) (*View, error) {
	entries, inodes, err := store.ReadDirInodes(dirIno)
	if err != nil {
		return nil, err
	}
	weightNames, used := weightFiles(store, log, dirPath, entries, inodes)
	v := &View{Key: folderKey(entries, inodes)}
	var sources []layout.Source
	for _, name := range weightNames {
		in := inodes[name]
		r := store.NewReader(dirPath+"/"+name, &in.Content)
		h, err := readHeader(r)
		if err != nil {
			log.Warn("left out of views", "file", dirPath+"/"+name, "reason", err)
			continue
		}
		sources = append(sources, layout.Source{Name: name, Header: h})
		v.Sources = append(v.Sources, r)
	}
	if len(sources) == 0 {
		return nil, syscall.ENOENT
	}
	lv := layout.BuildView(sources, spec)
	for _, w := range lv.Warnings {
		log.Warn("view of "+dirPath, "warning", w)
	}
	v.Files = lv.Files
	taken := map[string]bool{}
	for _, f := range v.Files {
		taken[f.Name] = true
	}
	for _, e := range entries {
		if used[e.Name] || taken[e.Name] || e.Mode == syscall.S_IFDIR {
			continue
		}
		v.Extra = append(v.Extra, Passthrough{Name: e.Name, Inode: inodes[e.Name]})
	}
	return v, nil
}

// weightFiles picks the folder's weight files in source order: the shards
// named by a *.safetensors.index.json (model.safetensors.index.json first),
// else every *.safetensors file, sorted. used holds them and the index.
func weightFiles(store *cache.Store, log *slog.Logger, dirPath string, entries []cache.DirEntry, inodes map[string]*cache.Inode) ([]string, map[string]bool) {
	isFile := func(name string) bool {
		in, ok := inodes[name]
		return ok && in.Mode&syscall.S_IFMT == syscall.S_IFREG
	}
	var indexes, files []string
	for _, e := range entries {
		switch {
		case !isFile(e.Name):
		case strings.HasSuffix(e.Name, ".safetensors.index.json"):
			indexes = append(indexes, e.Name)
		case strings.HasSuffix(e.Name, ".safetensors"):
			files = append(files, e.Name)
		}
	}
	sort.SliceStable(indexes, func(i, j int) bool { return indexes[i] == "model.safetensors.index.json" && indexes[j] != indexes[i] })
	for _, name := range indexes {
		in := inodes[name]
		idx, err := readIndex(store, dirPath+"/"+name, in)
		if err != nil {
			log.Warn("index ignored", "file", dirPath+"/"+name, "reason", err)
			continue
		}
		used := map[string]bool{name: true}
		var shards []string
		for _, s := range idx.Shards() {
			if !isFile(s) {
				log.Warn("index names a missing shard", "file", dirPath+"/"+name, "shard", s)
				continue
			}
			shards = append(shards, s)
			used[s] = true
		}
		return shards, used
	}
	used := map[string]bool{}
	for _, f := range files {
		used[f] = true
	}
	return files, used
}

func readIndex(store *cache.Store, path string, in *cache.Inode) (*layout.Index, error) {
	if in.Content.Size > maxIndexSize {
		return nil, fmt.Errorf("index of %d bytes is larger than %d", in.Content.Size, maxIndexSize)
	}
	r := store.NewReader(path, &in.Content)
	data, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		return nil, err
	}
	return layout.ParseIndex(data)
}

// readHeader reads and validates a stored safetensors file's header.
func readHeader(r *cache.FileReader) (*layout.Header, error) {
	prefix := make([]byte, 8)
	if _, err := r.ReadAt(prefix, 0); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	n, err := layout.HeaderLen(prefix)
	if err != nil {
		return nil, err
	}
	if 8+n > r.Size() {
		return nil, fmt.Errorf("header length %d beyond file size %d", n, r.Size())
	}
	head := make([]byte, 8+n)
	if _, err := r.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	return layout.ParseFile(head, r.Size())
}

// ReadAt reads view file i at off: synthesized bytes from memory, tensor
// bytes from only the source chunks the range covers.
func (v *View) ReadAt(i int, p []byte, off int64) (int, error) {
	f := &v.Files[i]
	n := 0
	for _, piece := range f.Pieces(off, int64(len(p))) {
		dst := p[piece.Off-off : piece.Off-off+piece.Len]
		if piece.Inline != nil {
			n += copy(dst, piece.Inline)
			continue
		}
		got, err := v.Sources[piece.Source].ReadAt(dst, piece.SrcOff)
		n += got
		if err != nil && !(err == io.EOF && got == len(dst)) {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// FileIndex finds a view file by name.
func (v *View) FileIndex(name string) (int, bool) {
	for i, f := range v.Files {
		if f.Name == name {
			return i, true
		}
	}
	return 0, false
}
