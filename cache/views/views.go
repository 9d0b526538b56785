// Package views plans the translated views of a stored folder: which of
// its files are weights, their headers read through the store, and the
// extent maps layout builds from them. fs serves the plans; export writes
// them out.
package views

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/hot"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/ckptfs/ckptfs/layout/torch"
	"github.com/ckptfs/ckptfs/layout/view"
)

// Folder is a folder's weights read and planned as tensors, for one state
// of the folder: what all its views share, so that @single and any number
// of @shards=SIZE read and parse its files once. It is a snapshot: the
// stored contents it reads never change.
type Folder struct {
	Key     string              // changes whenever the folder's files change
	Sources []*store.FileReader // by view.Extent.Source
	// Weights are the records of the files Sources read: every view file
	// draws from all of them (each header carries all their metadata), so
	// they say who may read it.
	Weights []*meta.Inode

	plan    *view.Plan
	others  []Passthrough // the files that are not weights
	log     *slog.Logger
	dirPath string
}

// View is a folder's weights laid out as one spec says, with what it
// needs to read them.
type View struct {
	*Folder
	Files []view.File
	Extra []Passthrough // the folder's other files, shown as they are
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

// Store is what views read of the store: the namespace, and files' content.
type Store interface {
	Namespace() *meta.Namespace
	NewReader(name string, c *meta.Content) *store.FileReader
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
func Build(st Store, settler Settler, log *slog.Logger, dirIno uint64, dirPath string, spec view.Spec) (*View, error) {
	entries, inodes, err := ReadFolder(st, settler, dirIno)
	if err != nil {
		return nil, err
	}
	f, err := Read(st, log, dirPath, entries, inodes, FolderKey(entries, inodes))
	if err != nil {
		return nil, err
	}
	return f.View(spec)
}

// ReadFolder reads a folder's entries and their records for Read, with
// its staged files settled first: a plan reads chunks, so that its key
// (FolderKey) outlives the background settling. A file staged again
// meanwhile is settled in the next round, for a few rounds.
func ReadFolder(st Store, settler Settler, dirIno uint64) ([]meta.DirEntry, map[string]*meta.Inode, error) {
	for round := 0; ; round++ {
		entries, inodes, err := st.Namespace().ReadDirInodes(dirIno)
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

// Read reads and plans the weights of a folder already read: its entries,
// their records and its FolderKey. What it reads and parses is paid for
// from one view.Budget, whatever the names or links that lead to the
// same bytes; a weight file's content is parsed once. What the folder's
// files leave out is logged, at most view.MaxWarnings lines and one
// that counts the rest. syscall.ENOENT when the folder has no weights to
// serve, or when planning them panics (see refusePanic).
func Read(st Store, log *slog.Logger, dirPath string, entries []meta.DirEntry, inodes map[string]*meta.Inode, key string) (_ *Folder, err error) {
	defer refusePanic(log, dirPath, &err)
	b, w, start := view.NewBudget(), &view.Warnings{}, time.Now()
	defer func() {
		for _, line := range w.List() {
			log.Warn("view of "+dirPath, "warning", line)
		}
		log.Debug("views planned", "dir", dirPath, "spent", b, "took", time.Since(start))
	}()
	f := &Folder{Key: key, log: log, dirPath: dirPath}
	weightNames, used, err := weightFiles(st, b, w, dirPath, entries, inodes)
	switch {
	case err != nil:
	case len(weightNames) == 0 && isDCPFolder(entries):
		used, err = planDCP(st, f, entries, inodes, b, w)
	case len(weightNames) == 0:
		return nil, syscall.ENOENT
	default:
		err = planSources(st, f, weightNames, inodes, b, w)
	}
	if err != nil {
		log.Warn("view refused", "dir", dirPath, "reason", err)
		return nil, syscall.ENOENT
	}
	f.others = passThrough(entries, inodes, used)
	return f, nil
}

// planSources plans f from its weight files, names.
func planSources(st Store, f *Folder, names []string, inodes map[string]*meta.Inode, b *view.Budget, w *view.Warnings) error {
	type parsed struct {
		h        *safetensors.Header
		warnings []string
		err      error
	}
	byContent := map[string]parsed{}
	var sources []view.Source
	for _, name := range names {
		in := inodes[name]
		r := st.NewReader(f.dirPath+"/"+name, &in.Content)
		key := store.ContentKey(&in.Content)
		p, ok := byContent[key]
		if !ok {
			p.h, p.warnings, p.err = readHeader(r, name, b)
			var over *view.BudgetError
			if errors.As(p.err, &over) {
				return p.err
			}
			byContent[key] = p
		}
		for _, x := range p.warnings {
			w.Addf("%s: %s", name, x)
		}
		sources = append(sources, view.Source{Name: name, Header: p.h, Err: p.err})
		f.Sources = append(f.Sources, r)
		if p.err == nil {
			f.Weights = append(f.Weights, in)
		}
	}
	var err error
	f.plan, err = view.PlanSources(sources, b, w)
	return err
}

// View lays the folder's weights out as spec says. A layout over the
// bounds on what a view synthesizes is refused: syscall.ENOENT.
func (f *Folder) View(spec view.Spec) (_ *View, err error) {
	defer refusePanic(f.log, f.dirPath, &err)
	lv, err := f.plan.View(spec)
	if err != nil {
		f.log.Warn("view refused", "dir", f.dirPath, "reason", err)
		return nil, syscall.ENOENT
	}
	v := &View{Folder: f, Files: lv.Files}
	taken := map[string]bool{}
	for _, vf := range v.Files {
		taken[vf.Name] = true
	}
	for _, x := range f.others {
		if !taken[x.Name] {
			v.Extra = append(v.Extra, x)
		}
	}
	return v, nil
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

// passThrough lists the folder's files that are not weights (used), to be
// shown as they are where no view file takes their name.
func passThrough(entries []meta.DirEntry, inodes map[string]*meta.Inode, used map[string]bool) []Passthrough {
	var out []Passthrough
	for _, e := range entries {
		if !used[e.Name] && e.Mode != syscall.S_IFDIR {
			out = append(out, Passthrough{Name: e.Name, Inode: inodes[e.Name]})
		}
	}
	return out
}

// weightFiles picks the folder's weight files in source order, preferring
// safetensors as transformers does: the shards named by a
// *.safetensors.index.json (model.safetensors.index.json first), else every
// *.safetensors file, sorted; then the same for PyTorch .bin weights. used
// holds the files picked and their index. The indexes read are paid for
// from b.
func weightFiles(st Store, b *view.Budget, w *view.Warnings, dirPath string, entries []meta.DirEntry, inodes map[string]*meta.Inode) ([]string, map[string]bool, error) {
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
			if err := b.SpendHeader(min(in.Content.Size, maxIndexSize)); err != nil {
				return nil, nil, err
			}
			idx, err := readIndex(st, dirPath+"/"+name, in)
			if err != nil {
				w.Addf("%s: %v: index ignored", name, err)
				continue
			}
			used := map[string]bool{name: true}
			var shards []string
			for _, s := range idx.Shards() {
				if !isFile(s) {
					w.Addf("%s names %s, which the folder does not have", name, s)
					continue
				}
				shards = append(shards, s)
				used[s] = true
			}
			return shards, used, nil
		}
		if len(k.files) > 0 {
			used := map[string]bool{}
			for _, f := range k.files {
				used[f] = true
			}
			return k.files, used, nil
		}
	}
	return nil, nil, nil
}

func readIndex(st Store, path string, in *meta.Inode) (*safetensors.Index, error) {
	data, err := readSmall(st, path, in, maxIndexSize)
	if err != nil {
		return nil, err
	}
	return safetensors.ParseIndex(data)
}

// readHeader reads and validates a stored weight file's header, paid for
// from b: a safetensors header, or the tensor table of a torch.save
// archive with absolute offsets and its warnings.
func readHeader(r *store.FileReader, name string, b *view.Budget) (*safetensors.Header, []string, error) {
	if strings.HasSuffix(name, ".bin") {
		var w view.Warnings
		h, err := torch.Parse(r, r.Size(), b, &w)
		return h, w.List(), err
	}
	h, err := safetensors.ReadHeader(r, r.Size(), b)
	return h, nil, err
}

// ReadAt reads view file i at off: synthesized bytes from memory, tensor
// bytes from only the source chunks the range covers, until ctx is done.
// The pieces of each source are read in one pass (store.FileReader.ReadSpans):
// a tile's rows interleave the sources, one piece per rank and row.
func (v *View) ReadAt(ctx context.Context, i int, p []byte, off int64) (int, error) {
	f := &v.Files[i]
	n := 0
	spans := make([][]store.Span, len(v.Sources))
	for _, piece := range f.Pieces(off, int64(len(p))) {
		dst := p[piece.Off-off : piece.Off-off+piece.Len]
		n += len(dst)
		if piece.Inline != nil {
			copy(dst, piece.Inline)
			continue
		}
		spans[piece.Source] = append(spans[piece.Source], store.Span{Dst: dst, Off: piece.SrcOff})
	}
	for src, list := range spans {
		if len(list) == 0 {
			continue
		}
		if err := v.Sources[src].ReadSpans(ctx, list); err != nil {
			if err == io.EOF { // the plan said the source holds more: never a short read
				err = fmt.Errorf("%s: a view piece runs past the end of source %d: %w", v.dirPath, src, io.ErrUnexpectedEOF)
			}
			return 0, err
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
