package view_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/safetensors"
	. "github.com/ckptfs/ckptfs/layout/view"
	"github.com/ckptfs/ckptfs/layout/viewtest"
)

func TestViewBounds(t *testing.T) {
	parse := func(data []byte) *safetensors.Header {
		h, err := safetensors.ParseFile(data, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	big := parse(layouttest.TinyTensorsHeader(2000, 5<<20))
	small := parse(layouttest.TinyTensorsHeader(10, 100))
	for i := range small.Tensors {
		small.Tensors[i].Name = "small." + small.Tensors[i].Name
	}
	// 5 MB of metadata: that source is left out, the other one is served.
	var v *View
	var warnings []string
	var err error
	used := layouttest.Allocated(func() {
		v, warnings, err = viewtest.LaySources([]Source{{Name: "big.safetensors", Header: big}, {Name: "small.safetensors", Header: small}}, Spec{Shards: true, MaxShardSize: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "big.safetensors: __metadata__ of") {
		t.Fatalf("warnings %q", warnings)
	}
	if len(v.Files) != 11 { // 10 one-tensor shards and the index
		t.Fatalf("%d files", len(v.Files))
	}
	if used > 16<<20 {
		t.Fatalf("planning allocated %d bytes", used)
	}
	// Headers over MaxInline: refused before any is built. (Made
	// without JSON: parsing it is not what is tested, and takes long.)
	many := &safetensors.Header{Metadata: map[string]string{"format": "pt", "pad": strings.Repeat("x", 60<<10)}}
	for i := range int64(200_000) {
		many.Tensors = append(many.Tensors, safetensors.Tensor{Name: fmt.Sprint("t", i), DType: "U8", Shape: []int64{1}, Begin: i, End: i + 1})
	}
	if _, _, err := viewtest.LaySources([]Source{{Name: "many.safetensors", Header: many}}, Spec{Shards: true, MaxShardSize: 1}); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("error %v", err)
	}
}
