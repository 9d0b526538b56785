package torch

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/ckptfs/ckptfs/layout/view"
	"github.com/ckptfs/ckptfs/layout/viewtest"
)

// parse is Parse of data with a budget of its own, and the warnings
// view.Warnings keeps.
func parse(data []byte) (*safetensors.Header, []string, error) {
	var w view.Warnings
	h, err := Parse(bytes.NewReader(data), int64(len(data)), view.NewBudget(), &w)
	return h, w.List(), err
}

// checkTorchFixtures checks Parse on every file gen.py wrote to dir:
// refused files are refused for the stated reason; the others give the
// tensors of their safetensors twin, same dtype, shape and bytes, and a
// warning for each name that must be left out.
func checkTorchFixtures(t *testing.T, dir string) {
	js, err := os.ReadFile(filepath.Join(dir, "expect.json"))
	if err != nil {
		t.Fatal(err)
	}
	var expect map[string]struct {
		LeftOut []string `json:"left_out"`
		Refused string   `json:"refused"`
	}
	if err := json.Unmarshal(js, &expect); err != nil {
		t.Fatal(err)
	}
	for name, want := range expect {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		h, warnings, err := parse(data)
		if want.Refused != "" {
			if err == nil || !strings.Contains(err.Error(), want.Refused) {
				t.Errorf("%s: error %v, want one naming %q", name, err, want.Refused)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(warnings) != len(want.LeftOut) {
			t.Errorf("%s: warnings %q, want one for each of %q", name, warnings, want.LeftOut)
		}
		for _, n := range want.LeftOut {
			if !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, `"`+n+`"`) }) {
				t.Errorf("%s: no warning for %q in %q", name, n, warnings)
			}
		}
		twin, err := os.ReadFile(filepath.Join(dir, strings.TrimSuffix(name, ".bin")+".safetensors"))
		if os.IsNotExist(err) {
			if len(h.Tensors) != 0 {
				t.Errorf("%s: %d tensors, want none", name, len(h.Tensors))
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		compareWithTwin(t, name, data, h, twin)
	}
}

func compareWithTwin(t *testing.T, name string, data []byte, h *safetensors.Header, twin []byte) {
	th, err := safetensors.ParseFile(twin, int64(len(twin)))
	if err != nil {
		t.Fatalf("%s twin: %v", name, err)
	}
	if len(h.Tensors) != len(th.Tensors) {
		t.Errorf("%s: %d tensors, twin has %d", name, len(h.Tensors), len(th.Tensors))
	}
	for _, want := range th.Tensors {
		i := slices.IndexFunc(h.Tensors, func(x safetensors.Tensor) bool { return x.Name == want.Name })
		if i < 0 {
			t.Errorf("%s: tensor %q missing", name, want.Name)
			continue
		}
		got := h.Tensors[i]
		if got.DType != want.DType || !slices.Equal(got.Shape, want.Shape) {
			t.Errorf("%s: %q is %s%v, want %s%v", name, want.Name, got.DType, got.Shape, want.DType, want.Shape)
		}
		wantBytes := twin[th.DataStart+want.Begin : th.DataStart+want.End]
		if !bytes.Equal(data[got.Begin:got.End], wantBytes) {
			t.Errorf("%s: bytes of %q differ", name, want.Name)
		}
	}
}

func TestParseTorchFixtures(t *testing.T) {
	checkTorchFixtures(t, "testdata")
}

// TestParseTorchFreshSave runs gen.py with the venv's torch (CKPTFS_PYTHON),
// so the reader is checked against what today's torch.save writes.
func TestParseTorchFreshSave(t *testing.T) {
	py := os.Getenv("CKPTFS_PYTHON")
	if py == "" {
		t.Skip("CKPTFS_PYTHON not set: no torch to generate fresh files")
	}
	dir := t.TempDir()
	out, err := exec.Command(py, "testdata/gen.py", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("gen.py: %v\n%s", err, out)
	}
	checkTorchFixtures(t, dir)
}

func TestParsePickleRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ pickle, want string }{
		"os.system":       {"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.", "global os.system refused"},
		"stack global":    {"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.", "global builtins.eval refused"},
		"torch non-dtype": {"\x80\x02ctorch\nload\n.", "global torch.load refused"},
		"call a dtype":    {"\x80\x02ctorch\nfloat32\n)R.", "call of torch.float32 refused"},
		"INST":            {"(ios\nsystem\n.", "opcode 0x69 refused"},
		"protocol 0":      {"\x80\x00N.", "protocol 0"},
		"BUILD on global": {"\x80\x02ccollections\nOrderedDict\n}b.", "BUILD on a global"},
		"truncated":       {"\x80\x02X\xff\x00\x00\x00ab", "truncated"},
		"no STOP":         {"\x80\x02N", "truncated"},
		"two objects":     {"\x80\x02NN.", "STOP with 2 objects"},
		"bad memo":        {"\x80\x02h\x05.", "memo key 5"},
		"not a storage":   {"\x80\x02X\x01\x00\x00\x00xQ.", "not a storage"},
	} {
		_, err := parsePickle([]byte(tc.pickle))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}

// TestParseTorchCompressedRecord: a zip whose storage record is deflated
// cannot be served by offset; the tensor is left out, nothing misread.
func TestParseTorchCompressedRecord(t *testing.T) {
	src, err := os.ReadFile("testdata/protocol4.bin")
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(src), int64(len(src)))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Deflate})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	zw.Close()
	h, warnings, err := parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Tensors) != 0 || len(warnings) != 3 || !strings.Contains(warnings[0], "compressed") {
		t.Fatalf("tensors %v, warnings %q", h.Tensors, warnings)
	}
}

func TestZipDescriptorLength(t *testing.T) {
	d32 := []byte("PK\x07\x08crc!\x05\x00\x00\x00\x05\x00\x00\x00")
	d64 := []byte("PK\x07\x08crc!\x05\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00")
	if n := zipDescriptorLen(d32, 5); n != 16 {
		t.Errorf("32-bit descriptor: %d", n)
	}
	if n := zipDescriptorLen(d64, 5); n != 24 {
		t.Errorf("64-bit descriptor: %d", n)
	}
	if n := zipDescriptorLen(d32[4:], 5); n != 12 {
		t.Errorf("unsigned descriptor: %d", n)
	}
	if n := zipDescriptorLen(d32, 6); n != 0 {
		t.Errorf("wrong size matched: %d", n)
	}
	// A signature inside the data that is no descriptor is passed over.
	stream := append([]byte("abPK\x07\x08de"), "PK\x07\x08crc!\x08\x00\x00\x00\x08\x00\x00\x00"...)
	if at := findZipDescriptor(stream, 0); at != 8 {
		t.Errorf("descriptor found at %d, want 8", at)
	}
}

// .bin weights follow the same rule: twins leave every shared name out.
func TestTorchTwinsLeftOut(t *testing.T) {
	b, err := os.ReadFile("testdata/state_dict.bin")
	if err != nil {
		t.Fatal(err)
	}
	var sources []view.Source
	for _, name := range []string{"pytorch_model-00001.bin", "pytorch_model-00002.bin"} {
		h, _, err := parse(b)
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, view.Source{Name: name, Header: h})
	}
	_, warnings, err := viewtest.LaySources(sources, view.Spec{})
	if err == nil || !strings.Contains(err.Error(), "no tensor") || len(warnings) == 0 ||
		!strings.Contains(warnings[0], "pytorch_model-00001.bin and pytorch_model-00002.bin") {
		t.Fatalf("%v, warnings %q", err, warnings)
	}
}
