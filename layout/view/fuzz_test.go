package view_test

import (
	"os"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/safetensors"
	. "github.com/ckptfs/ckptfs/layout/view"
	"github.com/ckptfs/ckptfs/layout/viewtest"
)

// FuzzShardedSafetensors plans the views of a distributed safetensors save
// whose second rank's file is the input, beside the first rank's file
// torch wrote: within a memory budget, every piece a view reads lies
// inside the file it reads from, and the files tile their size.
func FuzzShardedSafetensors(f *testing.F) {
	dir := "testdata/hf-2ranks/"
	rank0, err := os.ReadFile(dir + "shard-00001-model-00001-of-00001.safetensors")
	if err != nil {
		f.Fatal(err)
	}
	rank1, err := os.ReadFile(dir + "shard-00002-model-00001-of-00001.safetensors")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rank1)
	bottom := layouttest.Tensor{Name: "embed.weight", DType: "F32", Shape: []int64{5, 6}, Data: make([]byte, 120)}
	for _, at := range [][]int64{{5, 0}, {4, 0}, {1 << 62, 0}, {5}, {5, 0, 0}, {0, 6}} { // overlap, out of range, disagreeing with the shape
		f.Add(layouttest.Piece(map[string][]int64{"embed.weight": at}, bottom))
	}
	for _, info := range []string{layouttest.DeepShardingInfo(5_000), layouttest.WideShardingInfo(2_000), layouttest.DuplicateShardingInfo()} {
		f.Add(layouttest.Safetensors(map[string]string{safetensors.ShardingVersionKey: "1.0", safetensors.ShardingInfoKey: info}, bottom))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v *View
		var err error
		plan := func() {
			var h *safetensors.Header
			if h, err = safetensors.ParseFile(data, int64(len(data))); err != nil {
				return
			}
			h0, _ := safetensors.ParseFile(rank0, int64(len(rank0)))
			sources := []Source{{Name: "rank0", Header: h0}, {Name: "rank1", Header: h}}
			v, _, err = viewtest.LaySources(sources, Spec{Shards: true, MaxShardSize: 200})
		}
		if used, budget := layouttest.Allocated(plan), 64*uint64(len(data))+64<<20; used > budget {
			t.Fatalf("allocated %d bytes for a %d-byte input, budget %d", used, len(data), budget)
		}
		if err != nil {
			return
		}
		viewtest.CheckPieces(t, v, [][]byte{rank0, data})
	})
}
