// Package layout holds the pure byte-level logic of ckptfs: parsing and
// emitting safetensors headers and index.json files, reading torch.save
// archives without unpickling them, planning shard layouts and mapping view
// offsets to source extents. It opens no files: parsers read byte slices,
// an io.ReaderAt or a stream they are handed (ReadRecords, which splits a
// checkpoint being written into tensors and the bytes around them).
package layout

// DType is a safetensors element type name, as written in headers ("BF16").
type DType string

// elementSizes lists every dtype safetensors defines that ckptfs accepts,
// with its size in bytes.
var elementSizes = map[DType]int64{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2,
	"F8_E4M3": 1, "F8_E5M2": 1,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1,
	"U64": 8, "U32": 4, "U16": 2, "U8": 1,
	"BOOL": 1,
}

// Size returns the element size in bytes and whether the dtype is known.
func (d DType) Size() (int64, bool) {
	s, ok := elementSizes[d]
	return s, ok
}
