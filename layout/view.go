package layout

import (
	"fmt"
	"strings"

	"github.com/dustin/go-humanize"
)

// DefaultMaxShardSize is the max shard size of NAME@shards, as transformers'
// save_pretrained default.
const DefaultMaxShardSize = 5_000_000_000

// Bounds on what a view synthesizes. Every shard header carries the
// sources' __metadata__, so without them a few megabytes of metadata and
// @shards=1 made gigabytes of headers.
const (
	// MaxViewMetadata bounds one source's __metadata__, as JSON; a source
	// over it is left out of views. transformers writes {"format":"pt"}.
	MaxViewMetadata = 64 << 10
	// MaxViewInline bounds the headers and index a view synthesizes; a
	// view over it is refused.
	MaxViewInline = 64 << 20
)

// ViewSpec says how a checkpoint's weights are presented.
type ViewSpec struct {
	Shards       bool  // false: one model.safetensors
	MaxShardSize int64 // with Shards
}

// ParseViewName splits "DIR@single", "DIR@shards" or "DIR@shards=SIZE" into
// DIR and its spec. ok is false when name is not a view name at all; err is
// set when it looks like one but the size is malformed.
func ParseViewName(name string) (dir string, spec ViewSpec, ok bool, err error) {
	at := strings.LastIndexByte(name, '@')
	if at <= 0 {
		return "", ViewSpec{}, false, nil
	}
	dir, suffix := name[:at], name[at+1:]
	switch {
	case suffix == "single":
		return dir, ViewSpec{}, true, nil
	case suffix == "shards":
		return dir, ViewSpec{Shards: true, MaxShardSize: DefaultMaxShardSize}, true, nil
	case strings.HasPrefix(suffix, "shards="):
		size, err := ParseSize(strings.TrimPrefix(suffix, "shards="))
		if err != nil {
			return "", ViewSpec{}, true, err
		}
		return dir, ViewSpec{Shards: true, MaxShardSize: size}, true, nil
	}
	return "", ViewSpec{}, false, nil
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

// Source is one weight file of a checkpoint folder, with its parsed header.
// A torch.save source has DataStart 0 and tensor offsets absolute in the
// file (see ParseTorch).
type Source struct {
	Name   string
	Header *Header
}

// Extent is a run of bytes of a view file: either Inline bytes (a synthesized
// header or index) or Len bytes of source file Source starting at SrcOff.
type Extent struct {
	Off    int64
	Len    int64
	Inline []byte
	Source int
	SrcOff int64
}

// ViewFile is one file of a view: its name, size and extent map.
type ViewFile struct {
	Name    string
	Size    int64
	Extents []Extent
}

// Pieces returns the parts of the extents that cover [off, off+n), clipped
// to that range and to the file size, found by binary search.
func (f *ViewFile) Pieces(off, n int64) []Extent {
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
		p := Extent{Off: e.Off + skip, Len: length, Source: e.Source, SrcOff: e.SrcOff + skip}
		if e.Inline != nil {
			p.Inline = e.Inline[skip : skip+length]
		}
		out = append(out, p)
	}
	return out
}

// View is the planned content of a view directory.
type View struct {
	Files    []ViewFile
	Warnings []string // tensors left out, with the reason
}

type sourcedTensor struct {
	Tensor
	source int
}

// BuildView plans a view of the tensors of sources, taken in source order
// and, within a source, in offset order. A tensor name seen in an earlier
// source, and a source whose metadata is over MaxViewMetadata, are left out
// with a warning. The same input always gives the same bytes. A view whose
// headers would exceed MaxViewInline is refused.
func BuildView(sources []Source, spec ViewSpec) (*View, error) {
	v := &View{}
	seen := map[string]string{}
	metadata := map[string]string{}
	var all []sourcedTensor
	for i, s := range sources {
		if n := metadataSize(s.Header.Metadata); n > MaxViewMetadata {
			v.Warnings = append(v.Warnings, fmt.Sprintf("%s: __metadata__ of %d bytes exceeds the limit of %d: left out", s.Name, n, MaxViewMetadata))
			continue
		}
		for k, val := range s.Header.Metadata {
			if _, ok := metadata[k]; !ok {
				metadata[k] = val
			}
		}
		for _, t := range s.Header.Tensors {
			if first, dup := seen[t.Name]; dup {
				v.Warnings = append(v.Warnings, fmt.Sprintf("tensor %q of %s already in %s: left out", t.Name, s.Name, first))
				continue
			}
			seen[t.Name] = s.Name
			all = append(all, sourcedTensor{t, i})
		}
	}
	if _, ok := metadata["format"]; !ok {
		metadata["format"] = "pt"
	}
	groups := [][]sourcedTensor{all}
	if spec.Shards {
		groups = planShards(all, spec.MaxShardSize)
	}
	// Every header holds its tensors' entries and the metadata: bound the
	// sum before any header is built.
	inline := int64(len(groups)) * int64(metadataSize(metadata)+16)
	for _, t := range all {
		inline += headerEntrySize(t.Tensor)
	}
	if inline > MaxViewInline {
		return nil, fmt.Errorf("%d tensors in %d files need %d bytes of headers, over the limit of %d", len(all), len(groups), inline, MaxViewInline)
	}
	if !spec.Shards {
		v.Files = []ViewFile{buildFile("model.safetensors", all, sources, metadata)}
		return v, nil
	}
	weightMap := map[string]string{}
	var total int64
	for i, g := range groups {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(groups))
		v.Files = append(v.Files, buildFile(name, g, sources, metadata))
		for _, t := range g {
			weightMap[t.Name] = name
			total += t.Len()
		}
	}
	idx := EmitIndex(total, weightMap)
	v.Files = append(v.Files, ViewFile{
		Name: "model.safetensors.index.json", Size: int64(len(idx)),
		Extents: []Extent{{Len: int64(len(idx)), Inline: idx}},
	})
	return v, nil
}

// metadataSize bounds the length of metadata as a header writes it,
// without building it: the bound is checked before anything that large is.
func metadataSize(metadata map[string]string) int {
	n := 2
	for k, v := range metadata {
		n += jsonStringSize(k) + jsonStringSize(v) + 2
	}
	return n
}

// headerEntrySize bounds the length of a tensor's entry in a header: its
// quoted name, a dtype, two offsets and up to 20 digits a dimension.
func headerEntrySize(t Tensor) int64 {
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
func planShards(ts []sourcedTensor, max int64) [][]sourcedTensor {
	var groups [][]sourcedTensor
	var cur []sourcedTensor
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

func buildFile(name string, ts []sourcedTensor, sources []Source, metadata map[string]string) ViewFile {
	plain := make([]Tensor, len(ts))
	for i, t := range ts {
		plain[i] = t.Tensor
	}
	head, placed := EmitHeader(plain, metadata)
	f := ViewFile{Name: name, Extents: []Extent{{Len: int64(len(head)), Inline: head}}}
	off := int64(len(head))
	for i, t := range ts {
		if t.Len() == 0 {
			continue
		}
		srcOff := sources[t.source].Header.DataStart + t.Begin
		last := &f.Extents[len(f.Extents)-1]
		// Neighbours that are also neighbours in the source share one extent.
		if last.Inline == nil && last.Source == t.source && last.SrcOff+last.Len == srcOff {
			last.Len += t.Len()
		} else {
			f.Extents = append(f.Extents, Extent{Off: off, Len: t.Len(), Source: t.source, SrcOff: srcOff})
		}
		off = int64(len(head)) + placed[i].End
	}
	f.Size = int64(len(head))
	if len(placed) > 0 {
		f.Size += placed[len(placed)-1].End
	}
	return f
}
