// Package views plans the translated views of a stored folder: which of
// its files are weights, their headers read through the store, and the
// extent maps layout builds from them. fs serves the plans; export writes
// them out.
package views

import (
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/hot"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/layout"
)

// View is a folder's weights planned as a view, with what it needs to read
// them. It is a snapshot: the stored contents it reads never change.
type View struct {
	Files   []layout.ViewFile
	Sources []*store.FileReader // by layout.Extent.Source
	Extra   []Passthrough       // the folder's other files, shown as they are
	Key     string              // changes whenever the folder's files change
	// Weights are the records of the files Sources read: every view file
	// draws from all of them (each header carries all their metadata), so
	// they say who may read it.
	Weights []*meta.Inode
}

// Passthrough is a non-weight file of the folder.
type Passthrough struct {
	Name  string
	Inode *meta.Inode
}

// maxIndexSize bounds the index.json files read to find shards.
const maxIndexSize = 64 << 20

// FolderKey identifies the state of a folder's entries: any commit, rename,
// unlink, chmod or chown changes it. It names the content of every file, not just its
// size and time, because hot copies of view files are kept under it.
func FolderKey(entries []meta.DirEntry, inodes map[string]*meta.Inode) string {
	parts := make([]string, 0, 4*len(entries))
	for _, e := range entries {
		in := inodes[e.Name]
		parts = append(parts, e.Name, fmt.Sprint(in.Ino, in.Mtime, in.Mode, in.Uid, in.Gid), store.ContentKey(&in.Content))
	}
	return hot.Key(parts...)
}

// HasWeights reports whether a folder holds any weight file a view reads:
// safetensors, PyTorch .bin weights, or a DCP checkpoint.
func HasWeights(entries []meta.DirEntry) bool {
	for _, e := range entries {
		if e.Mode == syscall.S_IFREG && (strings.HasSuffix(e.Name, ".safetensors") || isTorchWeights(e.Name)) {
			return true
		}
	}
	return isDCPFolder(entries)
}

// isTorchWeights reports whether a file is a PyTorch model weights file
// by the names transformers and ColossalAI give them: pytorch_model.bin,
// pytorch_model-00001-of-00002.bin, pytorch_model-00001.bin.
func isTorchWeights(name string) bool {
	return strings.HasPrefix(name, "pytorch_model") && strings.HasSuffix(name, ".bin")
}

// isTorchIndex reports whether a file indexes PyTorch model shards; an
// optimizer's index (pytorch_optim.bin.index.json) is not one.
func isTorchIndex(name string) bool {
	return strings.HasSuffix(name, ".bin.index.json") && !strings.Contains(name, "optim")
}

// Settler chunks staged content before a view plans on it: the store's
// write path (writes.Path). Without one (nil), staged content is planned
// as it is: for a store nothing writes to.
type Settler interface {
	SettleNow(ins ...*meta.Inode) error
}

// Build plans the view spec of folder dirIno (at dirPath, for messages).
// Malformed weight files are left out with a warning; syscall.ENOENT when
// the folder has no usable weights.
func Build(store *store.Store, settler Settler, log *slog.Logger, dirIno uint64, dirPath string, spec layout.ViewSpec) (*View, error) {
	entries, inodes, err := ReadFolder(store, settler, dirIno)
	if err != nil {
		return nil, err
	}
	return Plan(store, log, dirPath, entries, inodes, FolderKey(entries, inodes), spec)
}

// ReadFolder reads a folder's entries and their records for Plan, with
// its staged files settled first: a plan reads chunks, so that its key
// (FolderKey) outlives the background settling. A file staged again
// meanwhile is settled in the next round, for a few rounds.
func ReadFolder(store *store.Store, settler Settler, dirIno uint64) ([]meta.DirEntry, map[string]*meta.Inode, error) {
	for round := 0; ; round++ {
		entries, inodes, err := store.Namespace().ReadDirInodes(dirIno)
		if err != nil {
			return nil, nil, err
		}
		var staged []*meta.Inode
		for _, in := range inodes {
			if in.Content.Staged != 0 {
				staged = append(staged, in)
			}
		}
		if len(staged) == 0 || round == 3 || settler == nil {
			return entries, inodes, nil
		}
		if err := settler.SettleNow(staged...); err != nil {
			return nil, nil, err
		}
	}
}

// Plan is Build of a folder already read: its entries and their records,
// and its FolderKey. A panic while planning refuses the view (ENOENT).
func Plan(store *store.Store, log *slog.Logger, dirPath string, entries []meta.DirEntry, inodes map[string]*meta.Inode, key string, spec layout.ViewSpec) (_ *View, err error) {
	defer refusePanic(log, dirPath, &err)
	weightNames, used := weightFiles(store, log, dirPath, entries, inodes)
	v := &View{Key: key}
	if len(weightNames) == 0 && isDCPFolder(entries) {
		var err error
		if used, err = planDCP(store, log, v, dirPath, entries, inodes, spec); err != nil {
			return nil, err
		}
		passThrough(v, entries, inodes, used)
		return v, nil
	}
	var sources []layout.Source
	for _, name := range weightNames {
		in := inodes[name]
		r := store.NewReader(dirPath+"/"+name, &in.Content)
		h, warnings, err := readHeader(r, name)
		if err != nil {
			log.Warn("left out of views", "file", dirPath+"/"+name, "reason", err)
			continue
		}
		for _, w := range warnings {
			log.Warn("tensor left out of views", "file", dirPath+"/"+name, "reason", w)
		}
		v.Weights = append(v.Weights, in)
		sources = append(sources, layout.Source{Name: name, Header: h})
		v.Sources = append(v.Sources, r)
	}
	if len(sources) == 0 {
		return nil, syscall.ENOENT
	}
	lv, err := layout.BuildView(sources, spec)
	if err := takePlan(v, lv, err, log, dirPath); err != nil {
		return nil, err
	}
	passThrough(v, entries, inodes, used)
	return v, nil
}

// takePlan keeps the files layout planned for dirPath in v and logs its
// warnings; a plan layout refused leaves the folder without views.
func takePlan(v *View, lv *layout.View, err error, log *slog.Logger, dirPath string) error {
	if err != nil {
		log.Warn("view refused", "dir", dirPath, "reason", err)
		return syscall.ENOENT
	}
	for _, w := range lv.Warnings {
		log.Warn("view of "+dirPath, "warning", w)
	}
	v.Files = lv.Files
	return nil
}

// refusePanic, deferred, turns a panic while planning dirPath's views into
// a refused view and a log line with the stack: a planner bug that some
// input meets costs that folder its views, not every user the mount.
func refusePanic(log *slog.Logger, dirPath string, err *error) {
	if r := recover(); r != nil {
		log.Error("view refused: planning failed", "dir", dirPath, "panic", r, "stack", string(debug.Stack()))
		*err = syscall.ENOENT
	}
}

// passThrough adds the folder's files that are not weights, and not named
// as a view file, to v as they are.
func passThrough(v *View, entries []meta.DirEntry, inodes map[string]*meta.Inode, used map[string]bool) {
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
}

// weightFiles picks the folder's weight files in source order, preferring
// safetensors as transformers does: the shards named by a
// *.safetensors.index.json (model.safetensors.index.json first), else every
// *.safetensors file, sorted; then the same for PyTorch .bin weights. used
// holds the files picked and their index.
func weightFiles(store *store.Store, log *slog.Logger, dirPath string, entries []meta.DirEntry, inodes map[string]*meta.Inode) ([]string, map[string]bool) {
	isFile := func(name string) bool {
		in, ok := inodes[name]
		return ok && in.Mode&syscall.S_IFMT == syscall.S_IFREG
	}
	type kind struct {
		indexes, files []string
		mainIndex      string
	}
	safetensors := &kind{mainIndex: "model.safetensors.index.json"}
	torch := &kind{mainIndex: "pytorch_model.bin.index.json"}
	for _, e := range entries {
		switch {
		case !isFile(e.Name):
		case strings.HasSuffix(e.Name, ".safetensors.index.json"):
			safetensors.indexes = append(safetensors.indexes, e.Name)
		case isTorchIndex(e.Name):
			torch.indexes = append(torch.indexes, e.Name)
		case strings.HasSuffix(e.Name, ".safetensors"):
			safetensors.files = append(safetensors.files, e.Name)
		case isTorchWeights(e.Name):
			torch.files = append(torch.files, e.Name)
		}
	}
	for _, k := range []*kind{safetensors, torch} {
		sort.SliceStable(k.indexes, func(i, j int) bool { return k.indexes[i] == k.mainIndex && k.indexes[j] != k.indexes[i] })
		for _, name := range k.indexes {
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
		if len(k.files) > 0 {
			used := map[string]bool{}
			for _, f := range k.files {
				used[f] = true
			}
			return k.files, used
		}
	}
	return nil, nil
}

func readIndex(store *store.Store, path string, in *meta.Inode) (*layout.Index, error) {
	data, err := readSmall(store, path, in, maxIndexSize)
	if err != nil {
		return nil, err
	}
	return layout.ParseIndex(data)
}

// readHeader reads and validates a stored weight file's header: a
// safetensors header, or the tensor table of a torch.save archive with
// absolute offsets and its warnings.
func readHeader(r *store.FileReader, name string) (*layout.Header, []string, error) {
	if strings.HasSuffix(name, ".bin") {
		return layout.ParseTorch(r, r.Size())
	}
	h, err := layout.ReadHeader(r, r.Size())
	return h, nil, err
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
