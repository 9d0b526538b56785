// Package layouttest builds checkpoint files for tests: torch.save zips
// around a given pickle, safetensors files and the pieces of a distributed
// save, and pickles and headers made to hurt a reader. It checks what a
// reader makes of them without the code under test: the memory it
// allocates, a safetensors file read with encoding/json alone, the tensors
// a fixture folder's reference.safetensors holds.
package layouttest

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
)

// TorchZip wraps a data.pkl and its storage records in a torch.save-style
// zip: stored entries under archive/, as torch writes them.
func TorchZip(pickle []byte, storages map[string][]byte) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: zip.Store})
		if err != nil {
			panic(err)
		}
		w.Write(data)
	}
	add("data.pkl", pickle)
	add("byteorder", []byte("little"))
	for key, data := range storages {
		add("data/"+key, data)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func shortString(s string) string {
	return "X" + string(binary.LittleEndian.AppendUint32(nil, uint32(len(s)))) + s
}

// DeepKeyPickle is a dict whose one key is a tuple nested depth levels deep.
func DeepKeyPickle(depth int) []byte {
	return []byte("\x80\x02}(K\x01" + strings.Repeat("\x85", depth) + "K\x02u.")
}

// WideDictPickle is a dict of n string keys, the last one set twice.
func WideDictPickle(n int) []byte {
	var b strings.Builder
	b.WriteString("\x80\x02}(")
	for i := range n {
		b.WriteString(shortString(fmt.Sprintf("layer.%d.weight", i)) + "K\x01")
	}
	b.WriteString(shortString(fmt.Sprintf("layer.%d.weight", n-1)) + "K\x02")
	b.WriteString("u.")
	return []byte(b.String())
}

// DupPickle is a list of n references to one object, one DUP byte each.
func DupPickle(n int) []byte {
	return []byte("\x80\x02](N" + strings.Repeat("2", n) + "e.")
}

// OrderedDictAgainPickle builds an OrderedDict from one memoized list of
// pairs pairs, times times over.
func OrderedDictAgainPickle(pairs, times int) []byte {
	var b strings.Builder
	b.WriteString("\x80\x02](")
	for i := range pairs {
		b.WriteString(shortString(fmt.Sprint(i)) + "K\x01\x86")
	}
	b.WriteString("eq\x00")
	for range times {
		b.WriteString("ccollections\nOrderedDict\nh\x00\x85R0")
	}
	b.WriteString(".")
	return []byte(b.String())
}

// SelfListPickle is a dict whose key 1 holds a list appended to itself:
// a cycle.
func SelfListPickle() []byte {
	return []byte("\x80\x02}(K\x01]q\x00h\x00au.")
}

// TinyTensorsHeader is a safetensors header of n one-byte U8 tensors and
// a __metadata__ entry metadataBytes long, and the data buffer it needs.
func TinyTensorsHeader(n, metadataBytes int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"__metadata__":{"format":"pt","pad":"%s"}`, strings.Repeat("x", metadataBytes))
	for i := range n {
		fmt.Fprintf(&b, `,"t%d":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}`, i, i, i+1)
	}
	b.WriteString("}")
	out := binary.LittleEndian.AppendUint64(nil, uint64(b.Len()))
	out = append(out, b.String()...)
	return append(out, make([]byte, n)...)
}

// dcpObject is a DCP dataclass instance of module.class whose state is
// the dict the fields push, key and value in turn.
func dcpObject(module, class string, fields ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ctorch.distributed.checkpoint.%s\n%s\n)\x81}(", module, class)
	for i := 0; i < len(fields); i += 2 {
		b.WriteString(shortString(fields[i]) + fields[i+1])
	}
	b.WriteString("ub")
	return b.String()
}

// dcpMetadataPickle is a DCP .metadata of no tensors, with the
// storage_data and planner_data dicts whose items the fragments push.
func dcpMetadataPickle(storageData, plannerData string) []byte {
	return []byte("\x80\x02" + dcpObject("metadata", "Metadata",
		"state_dict_metadata", "}",
		"storage_data", "}("+storageData+"u",
		"planner_data", "}("+plannerData+"u") + ".")
}

// PlannerDataAgainPickle is a DCP .metadata whose planner_data gives n
// names one memoized path of keys keys.
func PlannerDataAgainPickle(keys, n int) []byte {
	var b strings.Builder
	b.WriteString(shortString("p0") + "(" + strings.Repeat(shortString("k"), keys) + "tq\x00")
	for i := 1; i < n; i++ {
		b.WriteString(shortString(fmt.Sprint("p", i)) + "h\x00")
	}
	return dcpMetadataPickle("", b.String())
}

// TransformsAgainPickle is a DCP .metadata whose storage_data gives n
// chunks one memoized _StorageInfo of transforms transform descriptors.
func TransformsAgainPickle(transforms, n int) []byte {
	var b strings.Builder
	for i := range n {
		b.WriteString(dcpObject("metadata", "MetadataIndex", "fqn", shortString(fmt.Sprint("t", i)), "offset", "N"))
		if i == 0 {
			b.WriteString(dcpObject("filesystem", "_StorageInfo",
				"relative_path", shortString("__0_0.distcp"), "offset", "K\x00", "length", "K\x00",
				"transform_descriptors", "]("+strings.Repeat(shortString("zstd"), transforms)+"e") + "q\x00")
		} else {
			b.WriteString("h\x00")
		}
	}
	return dcpMetadataPickle(b.String(), "")
}

// PosixPathAgainPickle is a DCP .metadata that joins one memoized tuple of
// parts references to one string of partBytes bytes with
// pathlib.PosixPath, times times over: each call builds about
// parts*partBytes bytes from a few bytes of the file.
func PosixPathAgainPickle(partBytes, parts, times int) []byte {
	var b strings.Builder
	b.WriteString(shortString(strings.Repeat("p", partBytes)) + "q\x000")
	b.WriteString("(" + strings.Repeat("h\x00", parts) + "tq\x010")
	b.WriteString("cpathlib\nPosixPath\nq\x020")
	b.WriteString(strings.Repeat("h\x02h\x01R0", times))
	return dcpMetadataPickle("", b.String())
}

// Tensor is a tensor Safetensors writes: Data is its bytes, as many as
// its dtype and shape say.
type Tensor struct {
	Name  string
	DType string
	Shape []int64
	Data  []byte
}

// Safetensors writes a safetensors file of tensors, in the order given,
// with encoding/json rather than the code under test.
func Safetensors(metadata map[string]string, tensors ...Tensor) []byte {
	header := map[string]any{}
	if metadata != nil {
		header["__metadata__"] = metadata
	}
	var data []byte
	for _, t := range tensors {
		header[t.Name] = map[string]any{"dtype": t.DType, "shape": t.Shape, "data_offsets": []int{len(data), len(data) + len(t.Data)}}
		data = append(data, t.Data...)
	}
	js, err := json.Marshal(header)
	if err != nil {
		panic(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	return append(append(out, js...), data...)
}

// Piece is a rank's file of a distributed safetensors save, as torch
// writes it: its pieces, with DCP_SHARDING_INFO saying where each sits.
func Piece(at map[string][]int64, tensors ...Tensor) []byte {
	return Safetensors(map[string]string{"format": "pt", "DCP_VERSION": "1.0", "DCP_SHARDING_INFO": ShardingInfo(at)}, tensors...)
}

// ShardingInfo is the DCP_SHARDING_INFO of pieces at the offsets given.
func ShardingInfo(at map[string][]int64) string {
	info := map[string]any{}
	for name, offsets := range at {
		info[name] = map[string][]int64{"saved_offsets": offsets}
	}
	js, _ := json.Marshal(info)
	return string(js)
}

// DeepShardingInfo is sharding info nested depth arrays deep where the
// offsets of w belong.
func DeepShardingInfo(depth int) string {
	return `{"w":{"saved_offsets":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}}`
}

// WideShardingInfo is sharding info for w and n names no file holds.
func WideShardingInfo(n int) string {
	var b strings.Builder
	b.WriteString(`{"w":{"saved_offsets":[0]}`)
	for i := range n {
		fmt.Fprintf(&b, `,"x%d":{"saved_offsets":[%d]}`, i, i)
	}
	return b.String() + "}"
}

// DuplicateShardingInfo is sharding info that places w twice, elsewhere.
func DuplicateShardingInfo() string {
	return `{"w":{"saved_offsets":[0]},"w":{"saved_offsets":[2]}}`
}
