package dcp

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
	"github.com/ckptfs/ckptfs/layout/view"
	"github.com/ckptfs/ckptfs/layout/viewtest"
)

// memoryBudget is what a .metadata of n bytes and its view plan may
// cost: a multiple of its length, plus the work budget's worth of objects.
func memoryBudget(n int) uint64 { return 64*uint64(n) + 64*MaxWork }

// FuzzParseDCPMetadata reads a .metadata and, when it parses, plans its
// views over the 2-rank fixture's .distcp files: every piece a view reads
// must lie inside the file it reads from, and the files tile their size.
func FuzzParseDCPMetadata(f *testing.F) {
	for _, dir := range fixtures {
		if md, err := os.ReadFile(filepath.Join("testdata", dir, MetadataName)); err == nil {
			f.Add(md)
		}
	}
	for _, p := range layouttest.HostilePickles() {
		f.Add(p)
	}
	var files []File
	var data [][]byte
	for _, name := range []string{"__0_0.distcp", "__1_0.distcp"} {
		b, err := os.ReadFile(filepath.Join("testdata/2ranks", name))
		if err != nil {
			f.Fatal(err)
		}
		files, data = append(files, File{Name: name, R: bytes.NewReader(b), Size: int64(len(b))}), append(data, b)
	}
	f.Fuzz(func(t *testing.T, md []byte) {
		var ck *Checkpoint
		var v *view.View
		var err error
		plan := func() {
			if ck, err = ParseMetadata(md); err == nil {
				v, _, err = planView(ck, ModelNames(ck, "", false), files, view.Spec{Shards: true, MaxShardSize: 200})
			}
		}
		if used, budget := layouttest.Allocated(plan), memoryBudget(len(md)); used > budget {
			t.Fatalf("allocated %d bytes for a %d-byte input, budget %d", used, len(md), budget)
		}
		if err != nil {
			return
		}
		viewtest.CheckPieces(t, v, data)
	})
}
