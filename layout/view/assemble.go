package view

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// Chunk is a part of a tensor located: Sizes elements at Offsets in the
// whole, their bytes in row-major order at SrcOff of source Source. A DCP
// chunk and a piece of a distributed safetensors save are each one.
type Chunk struct {
	Offsets, Sizes []int64
	Source         int
	SrcOff         int64
}

// Replicas remembers the chunks of one tensor seen, so that a chunk
// several ranks saved (replicated) is read once.
type Replicas map[string]bool

// First reports whether no chunk at offsets of sizes was seen before.
func (r Replicas) First(offsets, sizes []int64) bool {
	key := fmt.Sprint(offsets, sizes)
	if r[key] {
		return false
	}
	r[key] = true
	return true
}

// Volume is the number of elements of shape, checked so that its bytes
// (each elem bytes) fit well in an int64.
func Volume(shape []int64, elem int64) (int64, error) {
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

// Assemble plans a tensor's row-major bytes from its chunks. Let k be the
// innermost dimension any chunk splits; the tensor is then rows of its
// dims before k, each row size[k] slices of what follows, and each chunk
// holds a column range of some rows. Rows whose chunks are the same form
// a band: one run when a chunk holds whole rows, else a Tile.
func Assemble(size []int64, elem int64, chunks []Chunk, b *Budget) ([]Extent, error) {
	total, _ := Volume(size, elem)
	if total *= elem; total == 0 {
		return nil, nil
	}
	k := -1
	for _, c := range chunks {
		for d := range size {
			if c.Sizes[d] != size[d] {
				k = max(k, d)
			}
		}
	}
	if k < 0 { // every chunk is the whole tensor: the first one serves
		if len(chunks) == 0 {
			return nil, errors.New("no chunk saved")
		}
		return []Extent{{Len: total, Source: chunks[0].Source, SrcOff: chunks[0].SrcOff}}, nil
	}
	inner, _ := Volume(size[k+1:], elem)
	inner *= elem
	rowBytes, rows := size[k]*inner, total/(size[k]*inner)
	var rects []rect
	for _, c := range chunks {
		width := c.Sizes[k] * inner
		var err error
		rects, err = chunkRects(rects, size[:k], c, width, c.Offsets[k]*inner, b)
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
func chunkRects(out []rect, dims []int64, c Chunk, width, col int64, b *Budget) ([]rect, error) {
	j := -1 // innermost of dims that c splits
	for d := range dims {
		if c.Sizes[d] != dims[d] {
			j = d
		}
	}
	if j < 0 {
		rows, _ := Volume(dims, 1)
		if err := b.SpendParts(1); err != nil {
			return nil, err
		}
		return append(out, rect{row: 0, rows: rows, col: col, width: width, source: c.Source, src: c.SrcOff}), nil
	}
	sub, _ := Volume(dims[j+1:], 1) // rows per index of dim j
	idx := slices.Clone(c.Offsets[:j])
	src := c.SrcOff
	for {
		if err := b.SpendParts(1 + j); err != nil {
			return nil, err
		}
		row := int64(0)
		for d := range j {
			row = row*dims[d] + idx[d]
		}
		row = (row*dims[j] + c.Offsets[j]) * sub
		n := c.Sizes[j] * sub
		out = append(out, rect{row: row, rows: n, col: col, width: width, source: c.Source, src: src})
		src += n * width
		// Next index of dims before j, within the chunk, last dim fastest.
		d := j - 1
		for ; d >= 0; d-- {
			if idx[d]++; idx[d] < c.Offsets[d]+c.Sizes[d] {
				break
			}
			idx[d] = c.Offsets[d]
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
		if err := b.SpendParts(len(active)); err != nil {
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
