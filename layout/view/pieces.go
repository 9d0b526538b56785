package view

import (
	"fmt"
	"iter"
	"slices"
	"strings"

	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// PlanSources plans the tensors of a folder's weight files (safetensors or
// torch.save), listed in source order and, within a source, in offset
// order. A tensor name is never served as one file's bytes when another
// file defines it too: a name one file defines is served as that file
// holds it; a name several define is assembled when every one of them
// says where its piece sits in the whole (DCP_SHARDING_INFO, as torch's
// distributed safetensors writer puts it) and the pieces tile the whole
// exactly, the pieces saved at one place read once. Anything else is left
// out with a warning naming the tensor and two of the files.
//
// A source that could not be read is left out with a warning; in a
// distributed save (some source has sharding info) the plan is refused
// instead, since the pieces that file held are unknown. The view headers
// carry the __metadata__ keys every source has with one value, without
// the DCP_ keys that describe a rank's pieces. Every source's tensors are
// paid for from b, however many sources share a header.
func PlanSources(sources []Source, b *Budget, w *Warnings) (*Plan, error) {
	total := 0
	for _, s := range sources {
		if s.Err == nil {
			if err := b.SpendTensors(len(s.Header.Tensors)); err != nil {
				return nil, err
			}
			total += len(s.Header.Tensors)
		}
	}
	files := make([]sourceFile, len(sources))
	pieces := make([]piece, 0, total)
	names := map[string]int32{} // by first appearance
	var metadata metadataVote
	for i, s := range sources {
		if s.Err != nil {
			continue
		}
		f := &files[i]
		f.Source = s
		var at map[string][]int64
		at, f.unusable = placements(s, w)
		f.sharded = at != nil
		if f.unusable == "" {
			metadata.add(s.Header.Metadata)
		}
		for j := range s.Header.Tensors {
			t := &s.Header.Tensors[j]
			name, seen := names[t.Name]
			if !seen {
				name = int32(len(names))
				names[t.Name] = name
			}
			pieces = append(pieces, piece{name: name, source: int32(i), t: t, at: at[t.Name]})
		}
	}
	for _, f := range sources {
		switch {
		case f.Err != nil && slices.ContainsFunc(files, func(f sourceFile) bool { return f.sharded }):
			return nil, fmt.Errorf("%s: %v: the pieces of a distributed save it holds are unknown", f.Name, f.Err)
		case f.Err != nil:
			w.Addf("%s: %v: left out", f.Name, f.Err)
		}
	}
	var all []Tensor
	for ps := range byName(pieces, len(names)) {
		pt, err := placePieces(ps, files, b)
		switch {
		case overBudget(err):
			return nil, err
		case err != nil:
			w.Addf("%q: %v: left out", ps[0].t.Name, err)
		case pt != nil:
			all = append(all, *pt)
		}
	}
	return NewPlan(all, metadata.agreed())
}

// byName yields the pieces of each of n names in turn, in the order of
// the names, each name's in source order: a counting sort, since a
// distributed save of a large model from many ranks has a million pieces.
func byName(pieces []piece, n int) iter.Seq[[]piece] {
	return func(yield func([]piece) bool) {
		start := make([]int, n+1)
		for _, p := range pieces {
			start[p.name+1]++
		}
		for i := range n {
			start[i+1] += start[i]
		}
		sorted := make([]piece, len(pieces))
		at := slices.Clone(start[:n])
		for _, p := range pieces {
			sorted[at[p.name]] = p
			at[p.name]++
		}
		for i := range n {
			if !yield(sorted[start[i]:start[i+1]]) {
				return
			}
		}
	}
}

// sourceFile is a source as PlanSources reads it.
type sourceFile struct {
	Source
	// sharded: the file says where its pieces sit in their wholes
	// (DCP_SHARDING_INFO).
	sharded bool
	// unusable is why none of the file's tensors can be used (metadata
	// over a bound, sharding info that does not parse); the file was
	// warned of.
	unusable string
}

// piece is one file's definition of a tensor name: the whole tensor, or,
// in a distributed save, a piece of it at at (nil when its file does not
// say where it sits).
type piece struct {
	name, source int32
	t            *safetensors.Tensor
	at           []int64
}

// placements reads where source s's pieces sit in their wholes: nil for a
// file that does not say (a plain one), or why its tensors cannot be
// used, warned of once here.
func placements(s Source, w *Warnings) (map[string][]int64, string) {
	if n := metadataSize(s.Header.Metadata); n > MaxMetadata {
		why := fmt.Sprintf("__metadata__ of %d bytes exceeds the limit of %d", n, MaxMetadata)
		w.Addf("%s: %s: left out", s.Name, why)
		return nil, why
	}
	at, err := safetensors.ParseShardingInfo(s.Header.Metadata)
	if err != nil {
		w.Addf("%s: %v: left out", s.Name, err)
		return nil, err.Error()
	}
	return at, ""
}

// placePieces plans a tensor from the pieces files define of it. A name
// only an unusable file defines gives no tensor and no error: that file
// was warned of.
func placePieces(ps []piece, files []sourceFile, b *Budget) (*Tensor, error) {
	for _, p := range ps {
		if why := files[p.source].unusable; why != "" {
			if len(ps) == 1 {
				return nil, nil
			}
			return nil, fmt.Errorf("defined by %s, and %s cannot be used: %s", filesOf(ps, files), files[p.source].Name, why)
		}
	}
	if p := ps[0]; len(ps) == 1 && !files[p.source].sharded {
		src := Extent{Len: p.t.Len(), Source: int(p.source), SrcOff: files[p.source].Header.DataStart + p.t.Begin}
		return &Tensor{*p.t, []Extent{src}}, nil
	}
	for _, p := range ps {
		switch {
		case p.at == nil && files[p.source].sharded:
			return nil, fmt.Errorf("%s says where its pieces sit, but not where this one does", files[p.source].Name)
		case p.at == nil:
			return nil, fmt.Errorf("defined by %s, and %s does not say where its piece sits", filesOf(ps, files), files[p.source].Name)
		}
	}
	return assemblePieces(ps, files, b)
}

// filesOf names the first two files pieces come from (each file holds one
// piece of a name), and counts the rest.
func filesOf(ps []piece, files []sourceFile) string {
	name := func(i int) string { return files[ps[i].source].Name }
	switch len(ps) {
	case 1:
		return name(0)
	case 2:
		return name(0) + " and " + name(1)
	}
	return fmt.Sprintf("%s, %s and %d more files", name(0), name(1), len(ps)-2)
}

// assemblePieces plans a tensor from pieces that each say where they sit:
// the whole ends where the pieces do, they must agree on dtype and rank
// and tile it exactly, and pieces at the same place (replicated) are read
// once.
func assemblePieces(ps []piece, files []sourceFile, b *Budget) (*Tensor, error) {
	first := ps[0].t
	elem, _ := first.DType.Size()
	size := make([]int64, len(first.Shape))
	for _, p := range ps {
		file := files[p.source].Name
		switch {
		case p.t.DType != first.DType:
			return nil, fmt.Errorf("%s holds a piece as %s, %s as %s", files[ps[0].source].Name, first.DType, file, p.t.DType)
		case len(p.t.Shape) != len(size):
			return nil, fmt.Errorf("%s holds a piece of rank %d, %s of rank %d", files[ps[0].source].Name, len(size), file, len(p.t.Shape))
		case len(p.at) != len(size):
			return nil, fmt.Errorf("%s places a piece of rank %d at %v", file, len(size), p.at)
		}
		for d, o := range p.at {
			if p.t.Shape[d] > safetensors.MaxSavedOffset-o {
				return nil, fmt.Errorf("%s places a piece of shape %v at %v, out of range", file, p.t.Shape, p.at)
			}
			size[d] = max(size[d], o+p.t.Shape[d])
		}
	}
	numel, err := Volume(size, elem)
	if err != nil {
		return nil, err
	}
	pt := Tensor{Tensor: safetensors.Tensor{Name: first.Name, DType: first.DType, Shape: size, End: numel * elem}}
	var chunks []Chunk
	saved := Replicas{}
	for _, p := range ps {
		if p.t.Len() > 0 && saved.First(p.at, p.t.Shape) {
			chunks = append(chunks, Chunk{Offsets: p.at, Sizes: p.t.Shape, Source: int(p.source), SrcOff: files[p.source].Header.DataStart + p.t.Begin})
		}
	}
	if pt.Extents, err = Assemble(size, elem, chunks, b); err != nil {
		return nil, fmt.Errorf("pieces in %s: %w", filesOf(ps, files), err)
	}
	return &pt, nil
}

// metadataVote gathers the __metadata__ view headers carry: each key
// that every source has, with one value, but for the DCP_ keys, which
// describe a rank's pieces, not the whole. A key one rank's file alone
// carries is that rank's, not the model's.
type metadataVote struct {
	sources int
	keys    map[string]*ballot
}

type ballot struct {
	value    string
	votes    int
	disagree bool
}

func (m *metadataVote) add(md map[string]string) {
	m.sources++
	if m.keys == nil {
		m.keys = map[string]*ballot{}
	}
	for k, v := range md {
		if strings.HasPrefix(k, safetensors.ShardingKeyPrefix) {
			continue
		}
		b, ok := m.keys[k]
		if !ok {
			b = &ballot{value: v}
			m.keys[k] = b
		}
		b.votes++
		b.disagree = b.disagree || b.value != v
	}
}

func (m *metadataVote) agreed() map[string]string {
	out := map[string]string{}
	for k, b := range m.keys {
		if b.votes == m.sources && !b.disagree {
			out[k] = b.value
		}
	}
	return out
}
