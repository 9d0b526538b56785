package view

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// llama70B is the tensors of a Llama 3 70B: name and shape.
func llama70B() (names []string, shapes [][]int64) {
	const hidden, ffn, kv, vocab, layers = 8192, 28672, 1024, 128256, 80
	add := func(name string, shape ...int64) {
		names, shapes = append(names, name), append(shapes, shape)
	}
	add("model.embed_tokens.weight", vocab, hidden)
	for i := range layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"self_attn.q_proj.weight", hidden, hidden)
		add(p+"self_attn.k_proj.weight", kv, hidden)
		add(p+"self_attn.v_proj.weight", kv, hidden)
		add(p+"self_attn.o_proj.weight", hidden, hidden)
		add(p+"mlp.gate_proj.weight", ffn, hidden)
		add(p+"mlp.up_proj.weight", ffn, hidden)
		add(p+"mlp.down_proj.weight", hidden, ffn)
		add(p+"input_layernorm.weight", hidden)
		add(p+"post_attention_layernorm.weight", hidden)
	}
	add("model.norm.weight", hidden)
	add("lm_head.weight", vocab, hidden)
	return names, shapes
}

// rankHeaders are the headers of the files a distributed safetensors save
// of tensors from ranks ranks writes, as torch does: 2-D tensors split on
// dim 0 as torch.chunk splits them (FSDP), empty pieces and all, and each
// 1-D one (a norm, replicated) written by one rank only.
func rankHeaders(ranks int, names []string, shapes [][]int64) [][]byte {
	out := make([][]byte, ranks)
	for r := range ranks {
		var b strings.Builder
		info := map[string]map[string][]int64{}
		var off int64
		var entries []string
		for i, name := range names {
			shape := shapes[i]
			at := make([]int64, len(shape))
			piece := append([]int64(nil), shape...)
			if len(shape) == 1 {
				if i%ranks != r {
					continue
				}
			} else {
				rows := (shape[0] + int64(ranks) - 1) / int64(ranks)
				at[0] = min(int64(r)*rows, shape[0])
				piece[0] = min(rows, shape[0]-at[0])
			}
			n := int64(2)
			for _, d := range piece {
				n *= d
			}
			js, _ := json.Marshal(map[string]any{"dtype": "BF16", "shape": piece, "data_offsets": []int64{off, off + n}})
			entries = append(entries, fmt.Sprintf("%q:%s", name, js))
			off += n
			info[name] = map[string][]int64{"saved_offsets": at}
		}
		infoJS, _ := json.Marshal(info)
		md, _ := json.Marshal(map[string]string{"format": "pt", safetensors.ShardingVersionKey: "1.0", safetensors.ShardingInfoKey: string(infoJS)})
		b.WriteString(`{"__metadata__":` + string(md))
		for _, e := range entries {
			b.WriteString("," + e)
		}
		b.WriteString("}")
		head := binary.LittleEndian.AppendUint64(nil, uint64(b.Len()))
		out[r] = append(head, b.String()...)
	}
	return out
}

// BenchmarkPlan70BFrom1024Ranks plans the views of a Llama 70B saved as
// distributed safetensors from 1,024 ranks, from its headers: what the
// plan's budget is sized for.
func BenchmarkPlan70BFrom1024Ranks(b *testing.B) {
	names, shapes := llama70B()
	heads := rankHeaders(1024, names, shapes)
	var headerBytes, infoBytes int
	for _, h := range heads {
		headerBytes += len(h)
	}
	b.ResetTimer()
	for b.Loop() {
		infoBytes = 0
		budget := NewBudget()
		var sources []Source
		for r, head := range heads {
			n, _ := safetensors.HeaderLen(head)
			if err := budget.SpendHeader(int64(len(head))); err != nil {
				b.Fatal(err)
			}
			h, err := safetensors.ParseHeaderJSON(head[8 : 8+n])
			if err != nil {
				b.Fatal(err)
			}
			h.DataStart = 8 + n
			infoBytes += len(h.Metadata[safetensors.ShardingInfoKey])
			sources = append(sources, Source{Name: fmt.Sprintf("shard-%05d-model-00001-of-00001.safetensors", r+1), Header: h})
		}
		var w Warnings
		p, err := PlanSources(sources, budget, &w)
		if err != nil || len(w.List()) > 0 {
			b.Fatal(err, w.List())
		}
		if _, err := p.View(Spec{Shards: true, MaxShardSize: DefaultMaxShardSize}); err != nil {
			b.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(len(p.tensors)), "tensors")
		b.Logf("%d tensors, %d headers of %d bytes in all (%d of sharding info), spent %s", len(names), len(heads), headerBytes, infoBytes, budget)
	}
}
