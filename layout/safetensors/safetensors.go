// Package safetensors reads and writes the safetensors format: the 8-byte
// header length, the JSON header of tensors and __metadata__, and the data
// buffer they tile; the *.index.json of a sharded checkpoint; the element
// types; and the DCP_SHARDING_INFO torch's distributed writer puts in
// __metadata__. It opens no files: parsers read byte slices or an
// io.ReaderAt they are handed.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSize bounds the JSON header ckptfs parses: 16 MiB holds some
// 230,000 tensor entries, four times the largest checkpoint file seen, and
// parses in about 2 s and 150 MB here. (The reference reader allows 100 MB,
// which took 17 s and 900 MB.) A file over it is stored and served as
// written, and left out of views.
const MaxHeaderSize = 16 << 20

// metadataKey is the reserved header entry holding string metadata.
const metadataKey = "__metadata__"

// Tensor is one entry of a safetensors header. Begin and End are byte
// offsets relative to the start of the data buffer.
type Tensor struct {
	Name       string
	DType      DType
	Shape      []int64
	Begin, End int64
}

// Len is the tensor's size in bytes.
func (t Tensor) Len() int64 { return t.End - t.Begin }

// Header is a parsed safetensors header. Tensors are sorted by Begin.
type Header struct {
	// DataStart is the file offset of the data buffer: 8 + header length.
	DataStart int64
	Metadata  map[string]string
	Tensors   []Tensor
}

// BufferLen is the length of the data buffer the tensors tile.
func (h *Header) BufferLen() int64 {
	if len(h.Tensors) == 0 {
		return 0
	}
	return h.Tensors[len(h.Tensors)-1].End
}

// HeaderLen reads the 8-byte little-endian header length at the start of a
// safetensors file and checks it against MaxHeaderSize.
func HeaderLen(prefix []byte) (int64, error) {
	if len(prefix) < 8 {
		return 0, errors.New("safetensors: shorter than the 8-byte length prefix")
	}
	n := binary.LittleEndian.Uint64(prefix)
	if n < 2 {
		return 0, fmt.Errorf("safetensors: header length %d too small", n)
	}
	if n > MaxHeaderSize {
		return 0, fmt.Errorf("safetensors: header length %d exceeds %d", n, MaxHeaderSize)
	}
	return int64(n), nil
}

// ParseFile parses and fully validates the header of a safetensors file of
// fileSize bytes whose first 8+N bytes are in head. The tensors must tile
// the data buffer exactly, which must end at the end of the file.
func ParseFile(head []byte, fileSize int64) (*Header, error) {
	n, err := HeaderLen(head)
	if err != nil {
		return nil, err
	}
	if 8+n > fileSize {
		return nil, fmt.Errorf("safetensors: header length %d beyond file size %d", n, fileSize)
	}
	if int64(len(head)) < 8+n {
		return nil, fmt.Errorf("safetensors: have %d header bytes, need %d", len(head), 8+n)
	}
	h, err := ParseHeaderJSON(head[8 : 8+n])
	if err != nil {
		return nil, err
	}
	h.DataStart = 8 + n
	if got, want := h.BufferLen(), fileSize-h.DataStart; got != want {
		return nil, fmt.Errorf("safetensors: tensors cover %d data bytes, file has %d", got, want)
	}
	return h, nil
}

// HeaderBudget pays for header bytes before they are read: a plan's
// budget, spent by every header of a folder.
type HeaderBudget interface {
	SpendHeader(n int64) error
}

// ReadHeader reads through r and validates (as ParseFile) the header of a
// safetensors file of size bytes, paying b for its bytes before it reads
// them.
func ReadHeader(r io.ReaderAt, size int64, b HeaderBudget) (*Header, error) {
	prefix := make([]byte, 8)
	if _, err := r.ReadAt(prefix, 0); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	n, err := HeaderLen(prefix)
	if err != nil {
		return nil, err
	}
	if 8+n > size {
		return nil, fmt.Errorf("safetensors: header length %d beyond file size %d", n, size)
	}
	if err := b.SpendHeader(8 + n); err != nil {
		return nil, err
	}
	head := make([]byte, 8+n)
	if _, err := r.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	return ParseFile(head, size)
}

// ParseHeaderJSON parses the JSON part of a header and validates every
// entry: known dtype, non-negative shape, byte length equal to the product
// of the shape times the element size, offsets contiguous from zero and no
// duplicate names. DataStart is left zero.
func ParseHeaderJSON(js []byte) (*Header, error) {
	if !utf8.Valid(js) {
		return nil, errors.New("safetensors: header is not valid UTF-8")
	}
	h := &Header{}
	err := decodeObject(js, func(key string, dec *json.Decoder) error {
		if key == metadataKey {
			h.Metadata = map[string]string{}
			if err := dec.Decode(&h.Metadata); err != nil {
				return fmt.Errorf("__metadata__ must map strings to strings: %w", err)
			}
			return nil
		}
		t, err := parseTensor(key, dec)
		if err != nil {
			return err
		}
		h.Tensors = append(h.Tensors, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	sort.SliceStable(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	var next int64
	for _, t := range h.Tensors {
		if t.Begin != next {
			if t.Begin < next {
				return nil, fmt.Errorf("safetensors: tensor %q at %d overlaps the previous one ending at %d", t.Name, t.Begin, next)
			}
			return nil, fmt.Errorf("safetensors: gap before tensor %q: %d..%d", t.Name, next, t.Begin)
		}
		next = t.End
	}
	return h, nil
}

type tensorJSON struct {
	DType       *DType   `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// parseTensor decodes the entry of tensor name, the next value of dec.
func parseTensor(name string, dec *json.Decoder) (Tensor, error) {
	var tj tensorJSON
	if err := dec.Decode(&tj); err != nil {
		return Tensor{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	if tj.DType == nil || tj.Shape == nil || tj.DataOffsets == nil {
		return Tensor{}, fmt.Errorf("tensor %q: needs dtype, shape and data_offsets", name)
	}
	t := Tensor{Name: name, DType: *tj.DType, Shape: *tj.Shape}
	size, ok := t.DType.Size()
	if !ok {
		return Tensor{}, fmt.Errorf("tensor %q: unknown dtype %q", name, t.DType)
	}
	if len(*tj.DataOffsets) != 2 {
		return Tensor{}, fmt.Errorf("tensor %q: data_offsets needs 2 numbers", name)
	}
	t.Begin, t.End = (*tj.DataOffsets)[0], (*tj.DataOffsets)[1]
	if t.Begin < 0 || t.End < t.Begin {
		return Tensor{}, fmt.Errorf("tensor %q: bad data_offsets [%d,%d]", name, t.Begin, t.End)
	}
	n := size
	for _, d := range t.Shape {
		if d < 0 {
			return Tensor{}, fmt.Errorf("tensor %q: negative dimension %d", name, d)
		}
		if d != 0 && n > math.MaxInt64/d {
			return Tensor{}, fmt.Errorf("tensor %q: shape overflows", name)
		}
		n *= d
	}
	if n != t.Len() {
		return Tensor{}, fmt.Errorf("tensor %q: shape %v of %s is %d bytes, offsets span %d", name, t.Shape, t.DType, n, t.Len())
	}
	return t, nil
}

// decodeObject walks one JSON object, handing each key to value with the
// decoder at its value, which value must consume. Duplicate keys, which
// encoding/json would silently merge, are refused. Values are decoded in
// place, from one decoder: a header of a million tensors is one pass.
func decodeObject(js []byte, value func(key string, dec *json.Decoder) error) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("object key is not a string")
		}
		if seen[key] {
			return fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		if err := value(key, dec); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	// Only trailing whitespace may follow: safetensors pads with spaces.
	rest := js[dec.InputOffset():]
	if len(bytes.TrimRight(rest, " \t\r\n")) != 0 {
		return errors.New("trailing bytes after the object")
	}
	return nil
}

// EmitHeader builds the 8-byte length prefix and JSON header for tensors in
// the given order, with contiguous offsets assigned from zero. The JSON is
// padded with spaces so that the data buffer starts 8-byte aligned. The
// returned tensors carry the assigned offsets.
func EmitHeader(tensors []Tensor, metadata map[string]string) ([]byte, []Tensor) {
	var b strings.Builder
	b.WriteByte('{')
	if len(metadata) > 0 {
		md, _ := json.Marshal(metadata) // map[string]string always marshals, keys sorted
		b.WriteString(`"__metadata__":`)
		b.Write(md)
	}
	out := make([]Tensor, len(tensors))
	var off int64
	for i, t := range tensors {
		t.Begin, t.End = off, off+t.Len()
		off = t.End
		out[i] = t
		if i > 0 || len(metadata) > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(t.Name)
		b.Write(name)
		fmt.Fprintf(&b, `:{"dtype":%q,"shape":[`, string(t.DType))
		for j, d := range t.Shape {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprint(&b, d)
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, t.Begin, t.End)
	}
	b.WriteByte('}')
	js := b.String()
	pad := (8 - len(js)%8) % 8
	buf := make([]byte, 8, 8+len(js)+pad)
	binary.LittleEndian.PutUint64(buf, uint64(len(js)+pad))
	buf = append(buf, js...)
	buf = append(buf, bytes.Repeat([]byte{' '}, pad)...)
	return buf, out
}
