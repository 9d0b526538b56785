package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
)

// Index is a parsed *.safetensors.index.json (or pytorch_model.bin.index.json).
type Index struct {
	TotalSize int64
	Metadata  map[string]any
	WeightMap map[string]string // tensor name -> shard file name
}

// ParseIndex parses an index file. Shard names must be plain file names in
// the index's own folder: names with a slash, "..", or that are absolute are
// refused, because index contents are never trusted as paths.
func ParseIndex(data []byte) (*Index, error) {
	var raw struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	if raw.WeightMap == nil {
		return nil, errors.New("index: no weight_map")
	}
	idx := &Index{Metadata: raw.Metadata, WeightMap: raw.WeightMap}
	if ts, ok := raw.Metadata["total_size"].(float64); ok {
		idx.TotalSize = int64(ts)
	}
	for name, file := range raw.WeightMap {
		if !IsPlainName(file) {
			return nil, fmt.Errorf("index: tensor %q maps to %q, not a file name in this folder", name, file)
		}
	}
	return idx, nil
}

// Shards returns the distinct shard file names of the index, sorted.
func (x *Index) Shards() []string {
	set := map[string]bool{}
	for _, f := range x.WeightMap {
		set[f] = true
	}
	out := make([]string, 0, len(set))
	for f := range set {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// IsPlainName reports whether name is a single path element that stays in
// its folder.
func IsPlainName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00") && path.Base(name) == name
}

// EmitIndex builds a HuggingFace index.json: metadata.total_size and a
// weight_map, keys sorted and indented as transformers writes them.
func EmitIndex(totalSize int64, weightMap map[string]string) []byte {
	type index struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	b, _ := json.MarshalIndent(index{map[string]int64{"total_size": totalSize}, weightMap}, "", "  ")
	return append(b, '\n')
}
