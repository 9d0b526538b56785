package safetensors

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
