package layout

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// DCPFile is a .distcp file of the folder, as a view reads it.
type DCPFile struct {
	Name string
	R    io.ReaderAt
	Size int64
}

// optimizerKeys are the state dict keys whose tensors are optimizer
// state, at any depth of the nesting, never served as model weights.
var optimizerKeys = []string{"optim", "optimizer", "optimizers", "optim_state", "optimizer_state"}

// DCPModelPrefix is the name prefix the views strip and serve when the
// state dict was saved nested as {"model": ..., "optim": ...}.
const DCPModelPrefix = "model."

// DCPModelNames chooses the tensors a model view serves and their names.
// By default, when the state dict was nested (planner_data says so) with
// a "model" sub-tree, it serves that sub-tree without the "model." prefix,
// the model's own state_dict names; otherwise every tensor under its own
// name. With override set, it serves the tensors whose name starts with
// prefix, stripped of it ("" serves every tensor as named). Tensors under
// an optimizer key (optimizerKeys) at any depth are never served; without
// planner_data, the name's first dotted part stands for the top key.
func DCPModelNames(ck *DCPCheckpoint, prefix string, override bool) map[string]string {
	if !override {
		prefix = ""
		for _, t := range ck.Tensors {
			if p := ck.Paths[t.FQN]; len(p) >= 2 && p[0] == "model" {
				prefix = DCPModelPrefix
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

// PlanDCP plans the tensors names selects (DCPModelNames), assembled from
// their chunks in files, in the order .metadata lists them. A tensor
// whose chunks cannot be served (a file missing or short, a storage
// transform, chunks overlapping or leaving a gap) is left out with a
// warning naming it and the cause. The items chunks are in are paid for
// from b as they are read.
func PlanDCP(ck *DCPCheckpoint, names map[string]string, files []DCPFile, b *Budget, w *Warnings) (*Plan, error) {
	byName := map[string]int{}
	for i, f := range files {
		byName[f.Name] = i
	}
	loc := newDCPLocator(files, b)
	var all []placedTensor
	for _, t := range ck.Tensors {
		name, ok := names[t.FQN]
		if !ok {
			continue
		}
		pt, err := placeDCPTensor(t, name, byName, loc)
		switch {
		case overBudget(err):
			return nil, err
		case err != nil:
			w.Addf("%q: %v: left out", t.FQN, err)
		default:
			all = append(all, pt)
		}
	}
	return newPlan(all, map[string]string{})
}

// dcpChunk is a chunk located: its bytes are Sizes elements in row-major
// order at SrcOff of source Source.
type dcpChunk struct {
	offsets, sizes []int64
	source         int
	srcOff         int64
}

func placeDCPTensor(t DCPTensor, name string, byName map[string]int, loc *dcpLocator) (placedTensor, error) {
	dt := torchDTypes[t.DType]
	if dt.st == "" {
		return placedTensor{}, fmt.Errorf("dtype %s has no safetensors equivalent", t.DType)
	}
	numel, err := volume(t.Size, dt.size)
	if err != nil {
		return placedTensor{}, err
	}
	pt := placedTensor{Tensor: Tensor{Name: name, DType: dt.st, Shape: t.Size, End: numel * dt.size}}
	var chunks []dcpChunk
	saved := replicas{}
	for _, c := range t.Chunks {
		if len(c.Offsets) != len(t.Size) || len(c.Sizes) != len(t.Size) {
			return pt, fmt.Errorf("chunk at %v of rank %d in a tensor of rank %d", c.Offsets, len(c.Offsets), len(t.Size))
		}
		for d := range t.Size {
			if c.Offsets[d] > t.Size[d] || c.Sizes[d] > t.Size[d]-c.Offsets[d] {
				return pt, fmt.Errorf("chunk at %v of %v lies outside size %v", c.Offsets, c.Sizes, t.Size)
			}
		}
		n, _ := volume(c.Sizes, dt.size)
		if n == 0 || !saved.first(c.Offsets, c.Sizes) {
			continue
		}
		if err := loc.budget.spendTensors(1); err != nil {
			return pt, err
		}
		fi, ok := byName[c.Storage.Path]
		if !ok {
			return pt, fmt.Errorf("chunk at %v is in %s, which the folder does not have", c.Offsets, c.Storage.Path)
		}
		off, err := loc.locate(fi, t, c, n*dt.size)
		if err != nil {
			return pt, fmt.Errorf("chunk at %v in %s: %w", c.Offsets, c.Storage.Path, err)
		}
		chunks = append(chunks, dcpChunk{offsets: c.Offsets, sizes: c.Sizes, source: fi, srcOff: off})
	}
	if pt.extents, err = assemble(t.Size, dt.size, chunks, loc.budget); err != nil {
		return pt, err
	}
	return pt, nil
}

// replicas remembers the chunks of one tensor seen, so that a chunk
// several ranks saved (replicated) is read once.
type replicas map[string]bool

// first reports whether no chunk at offsets of sizes was seen before.
func (r replicas) first(offsets, sizes []int64) bool {
	key := fmt.Sprint(offsets, sizes)
	if r[key] {
		return false
	}
	r[key] = true
	return true
}

// volume is the number of elements of shape, checked so that its bytes
// (each elem bytes) fit well in an int64.
func volume(shape []int64, elem int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d != 0 && n > (1<<62)/d/elem {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		n *= d
	}
	return n, nil
}

// rect is the part of a tensor, seen as rows of its dimensions up to the
// innermost one any chunk splits, that one chunk holds: rows [row, row+
// rows), bytes [col, col+width) of each, from src on, width a row.
type rect struct {
	row, rows  int64
	col, width int64
	source     int
	src        int64
}

// assemble plans a tensor's row-major bytes from its chunks. Let k be the
// innermost dimension any chunk splits; the tensor is then rows of its
// dims before k, each row size[k] slices of what follows, and each chunk
// holds a column range of some rows. Rows whose chunks are the same form
// a band: one run when a chunk holds whole rows, else a Tile.
func assemble(size []int64, elem int64, chunks []dcpChunk, b *Budget) ([]Extent, error) {
	total, _ := volume(size, elem)
	if total *= elem; total == 0 {
		return nil, nil
	}
	k := -1
	for _, c := range chunks {
		for d := range size {
			if c.sizes[d] != size[d] {
				k = max(k, d)
			}
		}
	}
	if k < 0 { // every chunk is the whole tensor: the first one serves
		if len(chunks) == 0 {
			return nil, errors.New("no chunk saved")
		}
		return []Extent{{Len: total, Source: chunks[0].source, SrcOff: chunks[0].srcOff}}, nil
	}
	inner, _ := volume(size[k+1:], elem)
	inner *= elem
	rowBytes, rows := size[k]*inner, total/(size[k]*inner)
	var rects []rect
	for _, c := range chunks {
		width := c.sizes[k] * inner
		var err error
		rects, err = chunkRects(rects, size[:k], c, width, c.offsets[k]*inner, b)
		if err != nil {
			return nil, err
		}
	}
	return bands(rects, rows, rowBytes, b)
}

// chunkRects appends the row ranges chunk c covers in the rows of dims
// (the dimensions before the split one): one range when c splits none of
// them but the first, else one for each index of the dims before the
// innermost one it splits.
func chunkRects(out []rect, dims []int64, c dcpChunk, width, col int64, b *Budget) ([]rect, error) {
	j := -1 // innermost of dims that c splits
	for d := range dims {
		if c.sizes[d] != dims[d] {
			j = d
		}
	}
	if j < 0 {
		rows, _ := volume(dims, 1)
		if err := b.spendParts(1); err != nil {
			return nil, err
		}
		return append(out, rect{row: 0, rows: rows, col: col, width: width, source: c.source, src: c.srcOff}), nil
	}
	sub, _ := volume(dims[j+1:], 1) // rows per index of dim j
	idx := slices.Clone(c.offsets[:j])
	src := c.srcOff
	for {
		if err := b.spendParts(1 + j); err != nil {
			return nil, err
		}
		row := int64(0)
		for d := range j {
			row = row*dims[d] + idx[d]
		}
		row = (row*dims[j] + c.offsets[j]) * sub
		n := c.sizes[j] * sub
		out = append(out, rect{row: row, rows: n, col: col, width: width, source: c.source, src: src})
		src += n * width
		// Next index of dims before j, within the chunk, last dim fastest.
		d := j - 1
		for ; d >= 0; d-- {
			if idx[d]++; idx[d] < c.offsets[d]+c.sizes[d] {
				break
			}
			idx[d] = c.offsets[d]
		}
		if d < 0 {
			return out, nil
		}
	}
}

// bands sweeps the rows top to bottom; in each band of rows the same
// rects cover, they must tile the row exactly.
func bands(rects []rect, rows, rowBytes int64, b *Budget) ([]Extent, error) {
	slices.SortFunc(rects, func(a, b rect) int { return cmp.Compare(a.row, b.row) })
	var cuts []int64
	for _, r := range rects {
		cuts = append(cuts, r.row, r.row+r.rows)
	}
	cuts = append(cuts, 0, rows)
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []Extent
	var active []rect
	next := 0
	for i := 0; i+1 < len(cuts) && cuts[i] < rows; i++ {
		lo, hi := cuts[i], cuts[i+1]
		active = slices.DeleteFunc(active, func(r rect) bool { return r.row+r.rows <= lo })
		for ; next < len(rects) && rects[next].row == lo; next++ {
			active = append(active, rects[next])
		}
		slices.SortFunc(active, func(a, b rect) int { return cmp.Compare(a.col, b.col) })
		at := int64(0)
		for _, r := range active {
			if r.col < at {
				return nil, fmt.Errorf("chunks overlap in rows %d..%d", lo, hi)
			}
			if r.col > at {
				break
			}
			at += r.width
		}
		if at != rowBytes {
			return nil, fmt.Errorf("incomplete: rows %d..%d have bytes %d..%d saved by no chunk", lo, hi, at, rowBytes)
		}
		if err := b.spendParts(len(active)); err != nil {
			return nil, err
		}
		out = appendBand(out, active, lo, hi, rowBytes)
	}
	return out, nil
}

// appendBand appends the extents of rows [lo, hi) that active tile.
func appendBand(out []Extent, active []rect, lo, hi, rowBytes int64) []Extent {
	srcAt := func(r rect) int64 { return r.src + (lo-r.row)*r.width }
	off := lo * rowBytes
	switch {
	case len(active) == 1:
		return appendExtent(out, Extent{Len: (hi - lo) * rowBytes, Source: active[0].source, SrcOff: srcAt(active[0])}, off)
	case hi-lo == 1:
		for _, r := range active {
			out = appendExtent(out, Extent{Len: r.width, Source: r.source, SrcOff: srcAt(r)}, off)
			off += r.width
		}
		return out
	}
	tile := &Tile{Period: rowBytes}
	for _, r := range active {
		tile.Parts = append(tile.Parts, TilePart{Source: r.source, SrcOff: srcAt(r), SrcStride: r.width, Len: r.width})
	}
	return append(out, Extent{Off: off, Len: (hi - lo) * rowBytes, Tile: tile})
}

// dcpLocator finds chunk bytes in .distcp files, reading each item once
// however many chunks name it: a hostile .metadata may point a million
// chunks at one item.
type dcpLocator struct {
	files   []DCPFile
	budget  *Budget
	headers map[[2]int64]*itemHeader // safetensors items, by file and offset
	saved   map[itemKey]savedItem    // torch.save items
}

type itemKey struct {
	file           int
	offset, length int64
}

type itemHeader struct {
	*Header
	byName map[string]int
	err    error
}

type savedItem struct {
	t   Tensor
	err error
}

func newDCPLocator(files []DCPFile, b *Budget) *dcpLocator {
	return &dcpLocator{files: files, budget: b, headers: map[[2]int64]*itemHeader{}, saved: map[itemKey]savedItem{}}
}

// locate returns the offset in file fi of chunk c's first element, its
// n bytes checked to lie inside the item and the file. The item is a
// torch.save archive of the chunk (the default), a safetensors file of
// the rank's chunks (SerializationFormat.SAFETENSORS), or the raw bytes.
func (l *dcpLocator) locate(fi int, t DCPTensor, c DCPChunk, n int64) (int64, error) {
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
	want := torchDTypes[t.DType].st
	switch {
	case bytes.HasPrefix(head, zipLocalSig):
		key := itemKey{fi, st.Offset, st.Length}
		item, ok := l.saved[key]
		if !ok {
			item.t, item.err = torchSavedTensor(io.NewSectionReader(f.R, st.Offset, st.Length), st.Length, l.budget)
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
func (l *dcpLocator) header(fi int, off int64) (*itemHeader, error) {
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
func readItemHeader(f DCPFile, off int64, b *Budget) (*itemHeader, error) {
	h, err := ReadHeader(io.NewSectionReader(f.R, off, f.Size-off), f.Size-off, b)
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
func sameTensor(t Tensor, dtype DType, sizes []int64) error {
	if t.DType != dtype {
		return fmt.Errorf("stored as %s, the metadata says %s", t.DType, dtype)
	}
	if !slices.Equal(t.Shape, sizes) {
		return fmt.Errorf("stored with shape %v, the metadata says %v", t.Shape, sizes)
	}
	return nil
}

// IsDCPDataFile reports whether name is a data file of a DCP checkpoint:
// a .distcp file of one rank's (and writer thread's) chunks.
func IsDCPDataFile(name string) bool {
	return path.Ext(name) == ".distcp"
}
