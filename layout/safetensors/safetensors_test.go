package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
)

// rawFile builds a safetensors file from a literal JSON header and a data
// buffer, without using the code under test.
func rawFile(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestParseFileValid(t *testing.T) {
	hdr := `{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[4,12]},` +
		`"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"I64","shape":[0,3],"data_offsets":[12,12]}}   `
	f := rawFile(hdr, make([]byte, 12))
	h, err := ParseFile(f, int64(len(f)))
	if err != nil {
		t.Fatal(err)
	}
	if h.DataStart != int64(8+len(hdr)) || h.Metadata["format"] != "pt" {
		t.Fatalf("header %+v", h)
	}
	names := []string{}
	for _, x := range h.Tensors {
		names = append(names, x.Name)
	}
	if strings.Join(names, ",") != "a,b,e" {
		t.Fatalf("order %v", names)
	}
}

func TestParseFileAllDTypes(t *testing.T) {
	var parts []string
	var off int64
	for dt, size := range elementSizes {
		parts = append(parts, `"`+string(dt)+`":{"dtype":"`+string(dt)+`","shape":[3],"data_offsets":[`+
			itoa(off)+`,`+itoa(off+3*size)+`]}`)
		off += 3 * size
	}
	f := rawFile("{"+strings.Join(parts, ",")+"}", make([]byte, off))
	h, err := ParseFile(f, int64(len(f)))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Tensors) != len(elementSizes) {
		t.Fatalf("got %d tensors", len(h.Tensors))
	}
}

func itoa(v int64) string { b, _ := json.Marshal(v); return string(b) }

func TestParseFileMalformed(t *testing.T) {
	ok := `"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`
	cases := map[string][]byte{
		"short prefix":     {1, 2, 3},
		"length too small": rawFile("{", nil),
		"length past file": func() []byte {
			f := rawFile("{"+ok+"}", make([]byte, 8))
			binary.LittleEndian.PutUint64(f, 1000)
			return f
		}(),
		"huge length":      func() []byte { f := rawFile("{}", nil); binary.LittleEndian.PutUint64(f, MaxHeaderSize+1); return f }(),
		"bad json":         rawFile(`{"a":`, make([]byte, 8)),
		"not object":       rawFile(`[1,2]`, nil),
		"invalid utf8":     rawFile("{\"\xff\":1}", nil),
		"unknown dtype":    rawFile(`{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)),
		"shape mismatch":   rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)),
		"negative dim":     rawFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, make([]byte, 8)),
		"negative offset":  rawFile(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[-8,0]}}`, make([]byte, 8)),
		"reversed offsets": rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}}`, make([]byte, 8)),
		"gap":              rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, make([]byte, 8)),
		"overlap": rawFile(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},`+
			`"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, make([]byte, 8)),
		"duplicate name":   rawFile(`{`+ok+`,`+ok+`}`, make([]byte, 8)),
		"missing field":    rawFile(`{"a":{"dtype":"F32","shape":[2]}}`, make([]byte, 8)),
		"extra field":      rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, make([]byte, 8)),
		"buffer too long":  rawFile(`{`+ok+`}`, make([]byte, 9)),
		"buffer too short": rawFile(`{`+ok+`}`, make([]byte, 7)),
		"trailing garbage": rawFile(`{`+ok+`}x`, make([]byte, 8)),
		"bad metadata":     rawFile(`{"__metadata__":{"a":1},`+ok+`}`, make([]byte, 8)),
		"overflow shape": rawFile(`{"a":{"dtype":"F64","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`,
			make([]byte, 8)),
	}
	for name, f := range cases {
		if _, err := ParseFile(f, int64(len(f))); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestEmitHeaderRoundTrip(t *testing.T) {
	in := []Tensor{
		{Name: "w\"eird/name", DType: "BF16", Shape: []int64{3, 5}, Begin: 100, End: 130},
		{Name: "scalar", DType: "F64", Shape: []int64{}, Begin: 0, End: 8},
		{Name: "empty", DType: "I32", Shape: []int64{0}, Begin: 130, End: 130},
	}
	head, placed := EmitHeader(in, map[string]string{"format": "pt", "k": "v"})
	if len(head)%8 != 0 {
		t.Fatalf("data start %d not 8-aligned", len(head))
	}
	total := placed[len(placed)-1].End
	f := append(head, make([]byte, total)...)
	h, err := ParseFile(f, int64(len(f)))
	if err != nil {
		t.Fatal(err)
	}
	if h.Metadata["k"] != "v" || len(h.Tensors) != 3 || h.Tensors[0].Name != "w\"eird/name" {
		t.Fatalf("parsed %+v", h)
	}
}

func TestParseIndex(t *testing.T) {
	good := `{"metadata":{"total_size":12},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors"}}`
	idx, err := ParseIndex([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if idx.TotalSize != 12 || strings.Join(idx.Shards(), ",") != "model-00001-of-00002.safetensors,model-00002-of-00002.safetensors" {
		t.Fatalf("index %+v", idx)
	}
	for _, bad := range []string{
		`{"weight_map":{"a":"../evil.safetensors"}}`,
		`{"weight_map":{"a":"/etc/passwd"}}`,
		`{"weight_map":{"a":"sub/x.safetensors"}}`,
		`{"weight_map":{"a":".."}}`,
		`{"metadata":{}}`,
		`not json`,
	} {
		if _, err := ParseIndex([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
