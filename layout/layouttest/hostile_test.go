package layouttest

import (
	"bytes"
	"testing"

	"github.com/ckptfs/ckptfs/layout/dcp"
	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/ckptfs/ckptfs/layout/torch"
	"github.com/ckptfs/ckptfs/layout/view"
)

// The builders make what they say: a torch zip the reader opens, and a
// safetensors file whose header parses with the tensors asked for, DCP
// metadata the DCP reader takes.
func TestBuildersMakeWhatTheySay(t *testing.T) {
	zip := TorchZip(DeepKeyPickle(10), nil)
	var warnings view.Warnings
	if _, err := torch.Parse(bytes.NewReader(zip), int64(len(zip)), view.NewBudget(), &warnings); err != nil || len(warnings.List()) != 1 {
		t.Fatalf("torch zip: %v %q", err, warnings.List())
	}
	st := TinyTensorsHeader(7, 100)
	h, err := safetensors.ParseFile(st, int64(len(st)))
	if err != nil || len(h.Tensors) != 7 || len(h.Metadata["pad"]) != 100 {
		t.Fatalf("safetensors: %v", err)
	}
	for _, p := range [][]byte{PlannerDataAgainPickle(3, 5), TransformsAgainPickle(3, 5), PosixPathAgainPickle(3, 5, 7)} {
		if ck, err := dcp.ParseMetadata(p); err != nil || len(ck.Tensors) != 0 {
			t.Fatalf("dcp metadata: %v", err)
		}
	}
	if ck, _ := dcp.ParseMetadata(PlannerDataAgainPickle(3, 5)); len(ck.Paths) != 5 || len(ck.Paths["p4"]) != 3 {
		t.Fatalf("planner data: %v", ck.Paths)
	}
}
