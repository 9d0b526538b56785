package view

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/dustin/go-humanize"
)

// DefaultMaxShardSize is the max shard size of NAME@shards, as transformers'
// save_pretrained default.
const DefaultMaxShardSize = 5_000_000_000

// Bounds on what a view synthesizes. Every shard header carries the
// sources' __metadata__, so without them a few megabytes of metadata and
// @shards=1 made gigabytes of headers.
const (
	// MaxMetadata bounds one source's __metadata__, as JSON; a source
	// over it is left out of views. transformers writes {"format":"pt"}.
	MaxMetadata = 64 << 10
	// MaxInline bounds the headers and index a view synthesizes; a
	// view over it is refused.
	MaxInline = 64 << 20
)

// Spec says how a checkpoint's weights are presented.
type Spec struct {
	Shards       bool  // false: one model.safetensors
	MaxShardSize int64 // with Shards
}

// ParseName splits "DIR@single", "DIR@shards" or "DIR@shards=SIZE" into
// DIR and its spec. ok is false when name is not a view name at all; err is
// set when it looks like one but the size is malformed.
func ParseName(name string) (dir string, spec Spec, ok bool, err error) {
	at := strings.LastIndexByte(name, '@')
	if at <= 0 {
		return "", Spec{}, false, nil
	}
	dir, suffix := name[:at], name[at+1:]
	switch {
	case suffix == "single":
		return dir, Spec{}, true, nil
	case suffix == "shards":
		return dir, Spec{Shards: true, MaxShardSize: DefaultMaxShardSize}, true, nil
	case strings.HasPrefix(suffix, "shards="):
		size, err := ParseSize(strings.TrimPrefix(suffix, "shards="))
		if err != nil {
			return "", Spec{}, true, err
		}
		return dir, Spec{Shards: true, MaxShardSize: size}, true, nil
	}
	return "", Spec{}, false, nil
}

// ParseSize reads a size as HuggingFace writes them: "500MB" (10^6), "2GiB"
// (2^30) or a plain byte count.
func ParseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	if n == 0 || n > 1<<62 {
		return 0, fmt.Errorf("size %q: out of range", s)
	}
	return int64(n), nil
}

// Source is one weight file of a checkpoint folder, with its parsed header,
// or why it could not be read. A torch.save source has DataStart 0 and
// tensor offsets absolute in the file (see torch.Parse).
type Source struct {
	Name   string
	Header *safetensors.Header
	Err    error
}

// Extent is a run of bytes of a view file: Inline bytes (a synthesized
// header or index), Len bytes of source file Source starting at SrcOff, or
// a Tile: rows of a tensor assembled from chunks that each hold a column
// range (a DCP tensor sharded on a dimension other than the first).
type Extent struct {
	Off    int64
	Len    int64
	Inline []byte
	Source int
	SrcOff int64
	Tile   *Tile
}

// Tile is Len/Period rows of Period bytes, each row the Parts in order.
// A plan of a tensor sharded on dim 1 thus costs one Tile and a part per
// shard, however many rows it has.
type Tile struct {
	Period int64
	Parts  []TilePart
}

// TilePart is Len bytes of each row, from source Source at SrcOff for the
// first row and SrcStride further on for each next one.
type TilePart struct {
	Source    int
	SrcOff    int64
	SrcStride int64
	Len       int64
}

// File is one file of a view: its name, size and extent map.
type File struct {
	Name    string
	Size    int64
	Extents []Extent
}

// Pieces returns the parts of the extents that cover [off, off+n), clipped
// to that range and to the file size, found by binary search.
func (f *File) Pieces(off, n int64) []Extent {
	if off >= f.Size || n <= 0 {
		return nil
	}
	end := min(off+n, f.Size)
	// First extent whose end is past off.
	lo, hi := 0, len(f.Extents)
	for lo < hi {
		mid := (lo + hi) / 2
		if e := f.Extents[mid]; e.Off+e.Len <= off {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	var out []Extent
	for i := lo; i < len(f.Extents) && f.Extents[i].Off < end; i++ {
		e := f.Extents[i]
		skip := max(off-e.Off, 0)
		length := min(e.Off+e.Len, end) - (e.Off + skip)
		if e.Tile != nil {
			out = e.Tile.pieces(out, e.Off, skip, length)
			continue
		}
		p := Extent{Off: e.Off + skip, Len: length, Source: e.Source, SrcOff: e.SrcOff + skip}
		if e.Inline != nil {
			p.Inline = e.Inline[skip : skip+length]
		}
		out = append(out, p)
	}
	return out
}

// pieces appends the source runs of bytes [skip, skip+n) of a tile whose
// first row is at view offset base: one piece per part and row touched.
func (t *Tile) pieces(out []Extent, base, skip, n int64) []Extent {
	end := skip + n
	for row := skip / t.Period; row*t.Period < end; row++ {
		at := row * t.Period
		for _, p := range t.Parts {
			lo, hi := max(at, skip), min(at+p.Len, end)
			if lo < hi {
				src := p.SrcOff + row*p.SrcStride + (lo - at)
				out = append(out, Extent{Off: base + lo, Len: hi - lo, Source: p.Source, SrcOff: src})
			}
			at += p.Len
		}
	}
	return out
}

// View is the planned content of a view directory.
type View struct {
	Files []File
}

// Tensor is a tensor a view serves: its entry (Len() long) and where its
// bytes come from, as extents relative to its first byte.
type Tensor struct {
	safetensors.Tensor
	Extents []Extent
}

// Plan is what the views of one state of a folder serve: its tensors,
// each with where its bytes come from, in the order views list them, and
// the __metadata__ their headers carry. It is planned once (PlanSources,
// dcp.Plan) and laid out for each spec by View, which never changes it:
// several specs may be laid out at once.
type Plan struct {
	tensors  []Tensor
	metadata map[string]string // "format" among them
}

// NewPlan is a plan of tensors whose headers carry metadata, "format":
// "pt" added when it has no format (transformers refuses a file without).
func NewPlan(tensors []Tensor, metadata map[string]string) (*Plan, error) {
	if len(tensors) == 0 {
		return nil, errors.New("no tensor to serve")
	}
	if _, ok := metadata["format"]; !ok {
		metadata["format"] = "pt"
	}
	return &Plan{tensors: tensors, metadata: metadata}, nil
}

// View lays the plan out in the files of spec: one model.safetensors, or
// shards and their index. The same plan and spec always give the same
// bytes. A view whose headers would exceed MaxInline is refused.
func (p *Plan) View(spec Spec) (*View, error) {
	v := &View{}
	if err := planFiles(v, p.tensors, p.metadata, spec); err != nil {
		return nil, err
	}
	return v, nil
}

// planFiles lays tensors out in the files of spec, each header carrying
// metadata.
func planFiles(v *View, all []Tensor, metadata map[string]string, spec Spec) error {
	groups := [][]Tensor{all}
	if spec.Shards {
		groups = planShards(all, spec.MaxShardSize)
	}
	// Every header holds its tensors' entries and the metadata: bound the
	// sum before any header is built.
	inline := int64(len(groups)) * int64(metadataSize(metadata)+16)
	for _, t := range all {
		inline += headerEntrySize(t.Tensor)
	}
	if inline > MaxInline {
		return fmt.Errorf("%d tensors in %d files need %d bytes of headers, over the limit of %d", len(all), len(groups), inline, MaxInline)
	}
	if !spec.Shards {
		v.Files = []File{buildFile("model.safetensors", all, metadata)}
		return nil
	}
	weightMap := map[string]string{}
	var total int64
	for i, g := range groups {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(groups))
		v.Files = append(v.Files, buildFile(name, g, metadata))
		for _, t := range g {
			weightMap[t.Name] = name
			total += t.Len()
		}
	}
	idx := safetensors.EmitIndex(total, weightMap)
	v.Files = append(v.Files, File{
		Name: "model.safetensors.index.json", Size: int64(len(idx)),
		Extents: []Extent{{Len: int64(len(idx)), Inline: idx}},
	})
	return nil
}

// metadataSize bounds the length of metadata as a view's header writes
// it, without building it: the bound is checked before anything that
// large is. The DCP_ keys of a source, which a view never writes, do not
// count.
func metadataSize(metadata map[string]string) int {
	n := 2
	for k, v := range metadata {
		if !strings.HasPrefix(k, safetensors.ShardingKeyPrefix) {
			n += jsonStringSize(k) + jsonStringSize(v) + 2
		}
	}
	return n
}

// headerEntrySize bounds the length of a tensor's entry in a header: its
// quoted name, a dtype, two offsets and up to 20 digits a dimension.
func headerEntrySize(t safetensors.Tensor) int64 {
	return int64(jsonStringSize(t.Name)) + 80 + 21*int64(len(t.Shape))
}

// jsonStringSize bounds the length of s as a JSON string: a byte that
// encoding/json may escape (\u00XX, \u2028, \ufffd for invalid UTF-8)
// counts six.
func jsonStringSize(s string) int {
	n := 2
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= 0x80 || b == '"' || b == '\\' || b == '<' || b == '>' || b == '&' {
			n += 6
		} else {
			n++
		}
	}
	return n
}

// planShards splits tensors greedily as transformers does: a new shard
// starts when the next tensor would push the current one past max; a tensor
// larger than max sits alone.
func planShards(ts []Tensor, max int64) [][]Tensor {
	var groups [][]Tensor
	var cur []Tensor
	var size int64
	for _, t := range ts {
		if len(cur) > 0 && size+t.Len() > max {
			groups = append(groups, cur)
			cur, size = nil, 0
		}
		cur = append(cur, t)
		size += t.Len()
	}
	if len(cur) > 0 || len(groups) == 0 {
		groups = append(groups, cur)
	}
	return groups
}

func buildFile(name string, ts []Tensor, metadata map[string]string) File {
	plain := make([]safetensors.Tensor, len(ts))
	for i, t := range ts {
		plain[i] = t.Tensor
	}
	head, placed := safetensors.EmitHeader(plain, metadata)
	f := File{Name: name, Extents: []Extent{{Len: int64(len(head)), Inline: head}}}
	for i, t := range ts {
		at := int64(len(head)) + placed[i].Begin
		for _, e := range t.Extents {
			f.Extents = appendExtent(f.Extents, e, at+e.Off)
		}
	}
	f.Size = int64(len(head))
	if len(placed) > 0 {
		f.Size += placed[len(placed)-1].End
	}
	return f
}

// appendExtent appends e placed at view offset off; a run that continues
// the last one in the same source joins it.
func appendExtent(es []Extent, e Extent, off int64) []Extent {
	if e.Len == 0 {
		return es
	}
	e.Off = off
	if len(es) > 0 {
		if last := &es[len(es)-1]; e.Tile == nil && last.Tile == nil && last.Inline == nil &&
			last.Source == e.Source && last.SrcOff+last.Len == e.SrcOff && last.Off+last.Len == off {
			last.Len += e.Len
			return es
		}
	}
	return append(es, e)
}
