package safetensors

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// torch's distributed safetensors (HuggingFaceStorageWriter with
// save_distributed=True, and DCP's SerializationFormat.SAFETENSORS items)
// hold a rank's piece of each tensor under the tensor's full name, and say
// in __metadata__ where each piece sits in the whole: DCP_SHARDING_INFO is
// a JSON object {"NAME": {"saved_offsets": [...]}, ...}. The whole's shape
// is not written; it is where the pieces end.
const (
	ShardingInfoKey    = "DCP_SHARDING_INFO"
	ShardingVersionKey = "DCP_VERSION"
	// ShardingKeyPrefix starts the __metadata__ keys that describe a
	// rank's pieces, not the tensors a view assembles from them.
	ShardingKeyPrefix = "DCP_"
)

// ShardingVersions are the DCP_VERSION values whose sharding info views
// read: "1.0", what torch 2.15 writes, and none.
var ShardingVersions = []string{"", "1.0"}

// MaxShardingInfo bounds one file's DCP_SHARDING_INFO. An entry takes
// about 80 bytes and a rank's file has one per tensor it holds a piece of,
// whatever the number of ranks: a 70B Llama's 723 take 38 KB (measured,
// view.BenchmarkPlan70BFrom1024Ranks). This admits some 50,000. A file over it is left out of views, and so is
// every tensor it holds a piece of.
const MaxShardingInfo = 4 << 20

// ParseShardingInfo reads a file's DCP_SHARDING_INFO: where each piece the
// file holds sits in its whole tensor, by name. A file without one gives
// nil and no error: it is not a piece of a distributed save.
func ParseShardingInfo(metadata map[string]string) (map[string][]int64, error) {
	info, ok := metadata[ShardingInfoKey]
	if !ok {
		return nil, nil
	}
	if v := metadata[ShardingVersionKey]; !slices.Contains(ShardingVersions, v) {
		return nil, fmt.Errorf("%s %q is not one views read (%s)", ShardingVersionKey, v, strings.Join(ShardingVersions[1:], ", "))
	}
	if len(info) > MaxShardingInfo {
		return nil, fmt.Errorf("%s of %d bytes exceeds the limit of %d", ShardingInfoKey, len(info), MaxShardingInfo)
	}
	at := map[string][]int64{}
	err := decodeObject([]byte(info), func(name string, dec *json.Decoder) error {
		var entry struct {
			SavedOffsets *[]int64 `json:"saved_offsets"`
		}
		if err := dec.Decode(&entry); err != nil {
			return fmt.Errorf("%q: %w", name, err)
		}
		if entry.SavedOffsets == nil {
			return fmt.Errorf("%q: no saved_offsets", name)
		}
		for _, o := range *entry.SavedOffsets {
			if o < 0 || o > MaxSavedOffset {
				return fmt.Errorf("%q: offset %d out of range", name, o)
			}
		}
		at[name] = *entry.SavedOffsets
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ShardingInfoKey, err)
	}
	return at, nil
}

// MaxSavedOffset bounds where a piece may sit on a dimension, so that
// offset plus size never overflows.
const MaxSavedOffset = 1 << 62
