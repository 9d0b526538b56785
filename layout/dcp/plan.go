package dcp

import (
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/ckptfs/ckptfs/layout/torch"
	"github.com/ckptfs/ckptfs/layout/view"
)

// File is a .distcp file of the folder, as a view reads it.
type File struct {
	Name string
	R    io.ReaderAt
	Size int64
}

// optimizerKeys are the state dict keys whose tensors are optimizer
// state, at any depth of the nesting, never served as model weights.
var optimizerKeys = []string{"optim", "optimizer", "optimizers", "optim_state", "optimizer_state"}

// ModelPrefix is the name prefix the views strip and serve when the
// state dict was saved nested as {"model": ..., "optim": ...}.
const ModelPrefix = "model."

// ModelNames chooses the tensors a model view serves and their names.
// By default, when the state dict was nested (planner_data says so) with
// a "model" sub-tree, it serves that sub-tree without the "model." prefix,
// the model's own state_dict names; otherwise every tensor under its own
// name. With override set, it serves the tensors whose name starts with
// prefix, stripped of it ("" serves every tensor as named). Tensors under
// an optimizer key (optimizerKeys) at any depth are never served; without
// planner_data, the name's first dotted part stands for the top key.
func ModelNames(ck *Checkpoint, prefix string, override bool) map[string]string {
	if !override {
		prefix = ""
		for _, t := range ck.Tensors {
			if p := ck.Paths[t.FQN]; len(p) >= 2 && p[0] == "model" {
				prefix = ModelPrefix
				break
			}
		}
	}
	names := map[string]string{}
	for _, t := range ck.Tensors {
		path := ck.Paths[t.FQN]
		if len(path) == 0 {
			path = strings.SplitN(t.FQN, ".", 2)[:1]
		}
		name, ok := strings.CutPrefix(t.FQN, prefix)
		if ok && name != "" && !slices.ContainsFunc(path, func(k string) bool { return slices.Contains(optimizerKeys, k) }) {
			names[t.FQN] = name
		}
	}
	return names
}

// Plan plans the tensors names selects (ModelNames), assembled from
// their chunks in files, in the order .metadata lists them. A tensor
// whose chunks cannot be served (a file missing or short, a storage
// transform, chunks overlapping or leaving a gap) is left out with a
// warning naming it and the cause. The items chunks are in are paid for
// from b as they are read.
func Plan(ck *Checkpoint, names map[string]string, files []File, b *view.Budget, w *view.Warnings) (*view.Plan, error) {
	byName := map[string]int{}
	for i, f := range files {
		byName[f.Name] = i
	}
	loc := newLocator(files, b)
	var all []view.Tensor
	for _, t := range ck.Tensors {
		name, ok := names[t.FQN]
		if !ok {
			continue
		}
		pt, err := placeTensor(t, name, byName, loc)
		switch {
		case errors.As(err, new(*view.BudgetError)):
			return nil, err
		case err != nil:
			w.Addf("%q: %v: left out", t.FQN, err)
		default:
			all = append(all, pt)
		}
	}
	return view.NewPlan(all, map[string]string{})
}

func placeTensor(t Tensor, name string, byName map[string]int, loc *locator) (view.Tensor, error) {
	dt, _ := torch.LookupDType(t.DType)
	if dt.Safetensors == "" {
		return view.Tensor{}, fmt.Errorf("dtype %s has no safetensors equivalent", t.DType)
	}
	numel, err := view.Volume(t.Size, dt.Size)
	if err != nil {
		return view.Tensor{}, err
	}
	pt := view.Tensor{Tensor: safetensors.Tensor{Name: name, DType: dt.Safetensors, Shape: t.Size, End: numel * dt.Size}}
	var chunks []view.Chunk
	saved := view.Replicas{}
	for _, c := range t.Chunks {
		if len(c.Offsets) != len(t.Size) || len(c.Sizes) != len(t.Size) {
			return pt, fmt.Errorf("chunk at %v of rank %d in a tensor of rank %d", c.Offsets, len(c.Offsets), len(t.Size))
		}
		for d := range t.Size {
			if c.Offsets[d] > t.Size[d] || c.Sizes[d] > t.Size[d]-c.Offsets[d] {
				return pt, fmt.Errorf("chunk at %v of %v lies outside size %v", c.Offsets, c.Sizes, t.Size)
			}
		}
		n, _ := view.Volume(c.Sizes, dt.Size)
		if n == 0 || !saved.First(c.Offsets, c.Sizes) {
			continue
		}
		if err := loc.budget.SpendTensors(1); err != nil {
			return pt, err
		}
		fi, ok := byName[c.Storage.Path]
		if !ok {
			return pt, fmt.Errorf("chunk at %v is in %s, which the folder does not have", c.Offsets, c.Storage.Path)
		}
		off, err := loc.locate(fi, t, c, n*dt.Size)
		if err != nil {
			return pt, fmt.Errorf("chunk at %v in %s: %w", c.Offsets, c.Storage.Path, err)
		}
		chunks = append(chunks, view.Chunk{Offsets: c.Offsets, Sizes: c.Sizes, Source: fi, SrcOff: off})
	}
	if pt.Extents, err = view.Assemble(t.Size, dt.Size, chunks, loc.budget); err != nil {
		return pt, err
	}
	return pt, nil
}

// locator finds chunk bytes in .distcp files, reading each item once
// however many chunks name it: a hostile .metadata may point a million
// chunks at one item.
type locator struct {
	files   []File
	budget  *view.Budget
	headers map[[2]int64]*itemHeader // safetensors items, by file and offset
	saved   map[itemKey]savedItem    // torch.save items
}

type itemKey struct {
	file           int
	offset, length int64
}

type itemHeader struct {
	*safetensors.Header
	byName map[string]int
	err    error
}

type savedItem struct {
	t   safetensors.Tensor
	err error
}

func newLocator(files []File, b *view.Budget) *locator {
	return &locator{files: files, budget: b, headers: map[[2]int64]*itemHeader{}, saved: map[itemKey]savedItem{}}
}

// locate returns the offset in file fi of chunk c's first element, its
// n bytes checked to lie inside the item and the file. The item is a
// torch.save archive of the chunk (the default), a safetensors file of
// the rank's chunks (SerializationFormat.SAFETENSORS), or the raw bytes.
func (l *locator) locate(fi int, t Tensor, c Chunk, n int64) (int64, error) {
	f, st := l.files[fi], c.Storage
	if len(st.Transforms) > 0 {
		return 0, fmt.Errorf("stored through transforms %q, which views do not serve", st.Transforms)
	}
	if st.Offset > f.Size || st.Length > f.Size-st.Offset {
		return 0, fmt.Errorf("item at %d..%d runs past the end of the %d-byte file", st.Offset, st.Offset+st.Length, f.Size)
	}
	head := make([]byte, min(9, f.Size-st.Offset))
	if _, err := f.R.ReadAt(head, st.Offset); err != nil && err != io.EOF {
		return 0, err
	}
	dt, _ := torch.LookupDType(t.DType)
	want := dt.Safetensors
	switch {
	case torch.IsZip(head):
		key := itemKey{fi, st.Offset, st.Length}
		item, ok := l.saved[key]
		if !ok {
			item.t, item.err = torch.ParseTensor(io.NewSectionReader(f.R, st.Offset, st.Length), st.Length, l.budget)
			l.saved[key] = item
		}
		tt, err := item.t, item.err
		if err != nil {
			return 0, err
		}
		if err := sameTensor(tt, want, c.Sizes); err != nil {
			return 0, err
		}
		return st.Offset + tt.Begin, nil
	case len(head) == 9 && head[8] == '{' && st.Length == n:
		h, err := l.header(fi, st.Offset)
		if err != nil {
			return 0, err
		}
		i, ok := h.byName[t.FQN]
		if !ok {
			return 0, fmt.Errorf("safetensors item has no tensor %q", t.FQN)
		}
		if err := sameTensor(h.Tensors[i], want, c.Sizes); err != nil {
			return 0, err
		}
		return h.DataStart + h.Tensors[i].Begin, nil
	case st.Length == n:
		return st.Offset, nil
	}
	return 0, fmt.Errorf("item of %d bytes is neither a torch.save archive nor the %d raw bytes of the chunk", st.Length, n)
}

// header reads the safetensors header at off of file fi once, its
// tensors checked to tile the rest of the file; DataStart is made absolute.
func (l *locator) header(fi int, off int64) (*itemHeader, error) {
	key := [2]int64{int64(fi), off}
	if h, ok := l.headers[key]; ok {
		return h, h.err
	}
	h, err := readItemHeader(l.files[fi], off, l.budget)
	if err != nil {
		h = &itemHeader{err: err}
	}
	l.headers[key] = h
	return h, err
}

// readItemHeader reads the safetensors file that makes the rest of f from
// off on (torch writes a rank's pickled values first, then its tensors).
func readItemHeader(f File, off int64, b *view.Budget) (*itemHeader, error) {
	h, err := safetensors.ReadHeader(io.NewSectionReader(f.R, off, f.Size-off), f.Size-off, b)
	if err != nil {
		return nil, err
	}
	h.DataStart += off
	ih := &itemHeader{Header: h, byName: make(map[string]int, len(h.Tensors))}
	for i, x := range h.Tensors {
		ih.byName[x.Name] = i
	}
	return ih, nil
}

// sameTensor checks that a stored chunk is what the metadata says.
func sameTensor(t safetensors.Tensor, dtype safetensors.DType, sizes []int64) error {
	if t.DType != dtype {
		return fmt.Errorf("stored as %s, the metadata says %s", t.DType, dtype)
	}
	if !slices.Equal(t.Shape, sizes) {
		return fmt.Errorf("stored with shape %v, the metadata says %v", t.Shape, sizes)
	}
	return nil
}

// IsDataFile reports whether name is a data file of a DCP checkpoint:
// a .distcp file of one rank's (and writer thread's) chunks.
func IsDataFile(name string) bool {
	return path.Ext(name) == ".distcp"
}
