package view

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/safetensors"
)

func TestPlanShardsGreedy(t *testing.T) {
	var ts []Tensor
	for i, l := range []int64{40, 30, 50, 200, 10, 10} {
		ts = append(ts, Tensor{Tensor: safetensors.Tensor{Name: fmt.Sprint(i), End: l}})
	}
	var sizes []string
	for _, g := range planShards(ts, 100) {
		var s int64
		for _, t := range g {
			s += t.Len()
		}
		sizes = append(sizes, fmt.Sprint(len(g), ":", s))
	}
	if got := fmt.Sprint(sizes); got != "[2:70 1:50 1:200 2:20]" {
		t.Fatalf("plan %s", got)
	}
}

func TestJSONStringSizeBoundsMarshal(t *testing.T) {
	for _, s := range []string{"", "model.layers.0.weight", "a\"b\\c", "<&>", "\x00\x1f", "é漢字", "\u2028", string([]byte{0xff, 0xfe}), strings.Repeat("x", 1000)} {
		js, _ := json.Marshal(s)
		if got := jsonStringSize(s); got < len(js) {
			t.Errorf("%q: bound %d, marshalled %d", s, got, len(js))
		}
	}
}

// The __metadata__ of a view is the keys its sources agree on, without
// the DCP_ keys, and "format": "pt".
func TestViewMetadataIsWhatSourcesAgreeOn(t *testing.T) {
	var sources []Source
	add := func(name string, metadata map[string]string) {
		b := layouttest.Safetensors(metadata, layouttest.Tensor{Name: name, DType: "U8", Shape: []int64{1}, Data: []byte{1}})
		h, err := safetensors.ParseFile(b, int64(len(b)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sources = append(sources, Source{Name: name + ".safetensors", Header: h})
	}
	add("a", map[string]string{"model": "m", "rank": "0", "DCP_VERSION": "1.0"})
	add("b", map[string]string{"model": "m", "rank": "1", "DCP_EXTRA": "x"})
	p, err := PlanSources(sources, NewBudget(), &Warnings{})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"model": "m", "format": "pt"}; !maps.Equal(p.metadata, want) {
		t.Fatalf("metadata %v, want %v", p.metadata, want)
	}
}
