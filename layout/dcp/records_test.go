package dcp

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/ckptfs/ckptfs/layout/torch"
	"github.com/ckptfs/ckptfs/layout/view"
)

// tensorRecords reads data as records (torch's tests check that they and
// the rest join back to data, these files among their seeds) and returns
// the dtype of each tensor record by the hash of its bytes.
func tensorRecords(t *testing.T, data []byte) map[[32]byte]safetensors.DType {
	t.Helper()
	got := map[[32]byte]safetensors.DType{}
	_, _, err := torch.ReadRecords(bufio.NewReader(bytes.NewReader(data)), func(rec torch.Record) error {
		body, err := io.ReadAll(rec.R)
		if rec.Tensor {
			got[sha256.Sum256(body)] = rec.DType
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A .distcp file is read as its items: every chunk a rank saved, in
// either serialization format, is a tensor record with the chunk's dtype,
// and its bytes are the chunk's bytes.
func TestRecordsOfDCPFiles(t *testing.T) {
	for _, dir := range []string{"2ranks", "4ranks", "2ranks-safetensors", "torch-2.5"} {
		f := readFixture(t, dir)
		for i, file := range f.files {
			want := map[[32]byte]safetensors.DType{}
			for _, tt := range f.ck.Tensors {
				dt, _ := torch.LookupDType(tt.DType)
				for _, c := range tt.Chunks {
					n, _ := view.Volume(c.Sizes, dt.Size)
					if c.Storage.Path != file.Name || n == 0 {
						continue
					}
					loc := newLocator(f.files, view.NewBudget())
					off, err := loc.locate(i, tt, c, n*dt.Size)
					if err != nil {
						t.Fatal(err)
					}
					want[sha256.Sum256(f.data[i][off:off+n*dt.Size])] = dt.Safetensors
				}
			}
			got := tensorRecords(t, f.data[i])
			for h, dt := range want {
				if got[h] != dt {
					t.Fatalf("%s/%s: a chunk is not a %s record (%d records, %d chunks)", dir, file.Name, dt, len(got), len(want))
				}
			}
		}
	}
}
