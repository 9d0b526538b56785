// Package torch reads torch.save archives without unpickling them: the
// zip directory, data.pkl through the restricted pickle reader, and where
// each tensor's bytes lie in its storage record; and it reads a checkpoint
// being written as a stream of records (ReadRecords): each tensor's bytes,
// with its dtype, and the bytes around them, for a safetensors file, a
// torch.save zip or a DCP .distcp of archives one after another. It opens
// no files: it reads an io.ReaderAt or a stream it is handed.
package torch

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/ckptfs/ckptfs/layout/pickle"
	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// The zip signatures torch.save archives use.
var (
	zipLocalSig      = []byte("PK\x03\x04")
	zipDescriptorSig = []byte("PK\x07\x08")
)

// IsZip reports whether a file starting with prefix starts as a zip, as a
// torch.save archive does.
func IsZip(prefix []byte) bool {
	return bytes.HasPrefix(prefix, zipLocalSig)
}

// zipLocalHeader is the part of a zip local file header a stream reader
// needs.
type zipLocalHeader struct {
	Name string
	Len  int   // header bytes, name and extra field included
	Size int64 // stored data bytes; -1 when only a data descriptor after the data has it
}

// parseZipLocalHeader parses the local file header at the start of b. When
// b is too short it returns need > len(b), the bytes to have; err is set for
// a header that is not one of a stored (uncompressed) entry.
func parseZipLocalHeader(b []byte) (h zipLocalHeader, need int, err error) {
	const fixed = 30
	if len(b) < fixed {
		return h, fixed, nil
	}
	if !bytes.HasPrefix(b, zipLocalSig) {
		return h, 0, errors.New("zip: no local header signature")
	}
	flags := binary.LittleEndian.Uint16(b[6:])
	method := binary.LittleEndian.Uint16(b[8:])
	csize, usize := binary.LittleEndian.Uint32(b[18:]), binary.LittleEndian.Uint32(b[22:])
	nameLen, extraLen := int(binary.LittleEndian.Uint16(b[26:])), int(binary.LittleEndian.Uint16(b[28:]))
	need = fixed + nameLen + extraLen
	if len(b) < need {
		return h, need, nil
	}
	if method != zip.Store {
		return h, 0, fmt.Errorf("zip: entry compressed with method %d", method)
	}
	h = zipLocalHeader{Name: string(b[fixed : fixed+nameLen]), Len: need, Size: int64(usize)}
	switch {
	case flags&0x8 != 0:
		h.Size = -1
	case csize != usize:
		return h, 0, errors.New("zip: stored entry with differing sizes")
	case usize == 0xFFFFFFFF:
		size, ok := zip64Size(b[fixed+nameLen : need])
		if !ok {
			return h, 0, errors.New("zip: no zip64 size")
		}
		h.Size = size
	}
	return h, need, nil
}

// zip64Size finds the uncompressed size in a zip64 extra field.
func zip64Size(extra []byte) (int64, bool) {
	for len(extra) >= 4 {
		id, n := binary.LittleEndian.Uint16(extra), int(binary.LittleEndian.Uint16(extra[2:]))
		if len(extra) < 4+n {
			return 0, false
		}
		if id == 0x0001 && n >= 8 {
			size := binary.LittleEndian.Uint64(extra[4:])
			return int64(size), size < 1<<62
		}
		extra = extra[4+n:]
	}
	return 0, false
}

// maxZipDescriptorLen is the longest data descriptor: signature, CRC and
// two 64-bit sizes.
const maxZipDescriptorLen = 24

// zipDescriptorLen returns the length of the data descriptor at the start of
// b if it records a stored entry of dataLen bytes, else 0. Descriptors with
// and without the optional signature, with 32- or 64-bit sizes, are known.
func zipDescriptorLen(b []byte, dataLen int64) int {
	for _, sig := range []int{4, 0} {
		if sig == 4 && !bytes.HasPrefix(b, zipDescriptorSig) {
			continue
		}
		sizes := b[min(sig+4, len(b)):]
		if len(sizes) >= 8 && dataLen < 1<<32 &&
			int64(binary.LittleEndian.Uint32(sizes)) == dataLen && int64(binary.LittleEndian.Uint32(sizes[4:])) == dataLen {
			return sig + 12
		}
		if len(sizes) >= 16 &&
			int64(binary.LittleEndian.Uint64(sizes)) == dataLen && int64(binary.LittleEndian.Uint64(sizes[8:])) == dataLen {
			return sig + 20
		}
	}
	return 0
}

// findZipDescriptor finds the first signed data descriptor in b at or
// after from that records the bytes before it as a stored entry, judged on
// the bytes b has, and returns where it starts, or -1.
func findZipDescriptor(b []byte, from int) int {
	for from < len(b) {
		i := bytes.Index(b[from:], zipDescriptorSig)
		if i < 0 {
			return -1
		}
		at := from + i
		if zipDescriptorLen(b[at:], int64(at)) > 0 {
			return at
		}
		from = at + 1
	}
	return -1
}

// storageEntry returns the storage key of a torch.save archive entry
// named ARCHIVE/data/KEY, given the data.pkl entry's name ARCHIVE/data.pkl.
func storageEntry(pickleName, name string) (string, bool) {
	dir := strings.TrimSuffix(pickleName, "data.pkl")
	key, ok := strings.CutPrefix(name, dir+"data/")
	return key, ok && key != ""
}

// isDataPickle reports whether a zip entry is a torch.save archive's data.pkl.
func isDataPickle(name string) bool {
	return path.Base(name) == "data.pkl" && strings.Count(name, "/") == 1
}

// storageRecord is what a stream reader needs of a storage record: its
// length and the safetensors dtype of its elements ("" when there is none).
type storageRecord struct {
	DType safetensors.DType
	Bytes int64
}

// storageRecords maps the storage keys of a parsed pickle to their records.
func storageRecords(p *pickled) map[string]storageRecord {
	out := make(map[string]storageRecord, len(p.Storages))
	for _, s := range p.Storages {
		dt, _ := LookupDType(s.DType)
		out[s.Key] = storageRecord{DType: dt.Safetensors, Bytes: s.Bytes}
	}
	return out
}

// Parse reads the tensors of a torch.save archive (PyTorch 1.6 and
// later) from r without unpickling: the zip directory, data.pkl through
// the restricted pickle reader (parsePickle), and the storage records'
// places. It returns a Header whose
// DataStart is 0 and whose tensor offsets are absolute in the file, so that
// a view copies tensor bytes straight out of the storage records. Tensors
// a safetensors file cannot hold as they are (non-contiguous strides,
// complex dtypes, non-tensor values) are left out with a warning to w,
// which bounds how many it keeps: a state dict may have a million keys. The
// zip directory and data.pkl are paid for from b before they are read.
func Parse(r io.ReaderAt, size int64, b HeaderBudget, w Warnings) (*safetensors.Header, error) {
	a, err := openArchive(r, size, b)
	if err != nil {
		return nil, err
	}
	root, ok := a.pickled.Root.(*pickle.Dict)
	if !ok {
		return nil, fmt.Errorf("torch zip: data.pkl holds %s, not a state dict", pickle.TypeName(a.pickled.Root))
	}
	entries, dir := a.entries, a.dir
	h := &safetensors.Header{Metadata: map[string]string{"format": "pt"}}
	for i, k := range root.Keys {
		name, ok := k.(string)
		if !ok {
			w.Addf("key %d is %s, not a name: left out", i, pickle.TypeName(k))
			continue
		}
		t, err := placeTensor(name, root.Values[i], entries, dir, size)
		if err != nil {
			w.Addf("%q: %v: left out", name, err)
			continue
		}
		h.Tensors = append(h.Tensors, t)
	}
	sort.SliceStable(h.Tensors, func(i, j int) bool { return h.Tensors[i].Begin < h.Tensors[j].Begin })
	return h, nil
}

// archive is a torch.save zip opened: its entries by name, the
// archive's folder (the prefix of data.pkl) and the pickle read.
type archive struct {
	entries map[string]*zip.File
	dir     string
	pickled *pickled
}

// HeaderBudget pays for header bytes before they are read: a plan's
// budget, spent by every header of a folder.
type HeaderBudget interface {
	SpendHeader(n int64) error
}

// Warnings takes what a parse leaves out, and why; view.Warnings keeps the
// first few and counts the rest.
type Warnings interface {
	Addf(format string, args ...any)
}

// openArchive reads the zip directory of a torch.save archive of size
// bytes, checks its byte order and reads data.pkl through parsePickle,
// paying b for the directory and data.pkl.
func openArchive(r io.ReaderAt, size int64, b HeaderBudget) (*archive, error) {
	dirSize, err := checkZipDirectory(r, size)
	if err != nil {
		return nil, fmt.Errorf("torch zip: %w", err)
	}
	if err := b.SpendHeader(dirSize); err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("torch zip: %w", err)
	}
	entries := map[string]*zip.File{}
	var pkl *zip.File
	for _, f := range zr.File {
		entries[f.Name] = f
		if isDataPickle(f.Name) && pkl == nil {
			pkl = f
		}
	}
	if pkl == nil {
		return nil, errors.New("torch zip: no ARCHIVE/data.pkl: not a torch.save archive")
	}
	dir := strings.TrimSuffix(pkl.Name, "data.pkl")
	if f := entries[dir+"byteorder"]; f != nil {
		order, err := readEntry(f, 16)
		if err != nil {
			return nil, err
		}
		if string(order) != "little" {
			return nil, fmt.Errorf("torch zip: byteorder %q: only little-endian is read", order)
		}
	}
	if err := b.SpendHeader(int64(min(pkl.UncompressedSize64, pickle.MaxSize))); err != nil {
		return nil, err
	}
	data, err := readEntry(pkl, pickle.MaxSize)
	if err != nil {
		return nil, err
	}
	p, err := parsePickle(data)
	if err != nil {
		return nil, fmt.Errorf("torch zip: %s: %w", pkl.Name, err)
	}
	return &archive{entries: entries, dir: dir, pickled: p}, nil
}

// ParseTensor places the one tensor a torch.save(tensor) archive of size
// bytes holds: its dtype, shape and bytes in r. The zip directory and
// data.pkl are paid for from b before they are read.
func ParseTensor(r io.ReaderAt, size int64, b HeaderBudget) (safetensors.Tensor, error) {
	a, err := openArchive(r, size, b)
	if err != nil {
		return safetensors.Tensor{}, err
	}
	return placeTensor("", a.pickled.Root, a.entries, a.dir, size)
}

// Bounds on a torch.save zip's central directory, checked before
// archive/zip reads it: it allocates for every entry the directory claims.
// A state dict has one entry per storage plus a handful.
const (
	MaxZipEntries   = 1 << 18
	MaxZipDirectory = 32 << 20
)

// checkZipDirectory reads the end-of-central-directory record (and its
// zip64 twin) and refuses a directory over MaxZipEntries or MaxZipDirectory.
// It returns the directory's size as the record gives it. A file with no
// such record is left to archive/zip to refuse.
func checkZipDirectory(r io.ReaderAt, size int64) (int64, error) {
	const eocdLen, locatorLen, maxComment = 22, 20, 65535
	tail := make([]byte, min(size, eocdLen+locatorLen+maxComment))
	if _, err := r.ReadAt(tail, size-int64(len(tail))); err != nil && err != io.EOF {
		return 0, err
	}
	at := bytes.LastIndex(tail, []byte("PK\x05\x06"))
	if at < 0 || len(tail)-at < eocdLen {
		return 0, nil
	}
	entries := uint64(binary.LittleEndian.Uint16(tail[at+10:]))
	dirSize := uint64(binary.LittleEndian.Uint32(tail[at+12:]))
	if loc := at - locatorLen; loc >= 0 && bytes.HasPrefix(tail[loc:], []byte("PK\x06\x07")) {
		rec := make([]byte, 56)
		off := int64(binary.LittleEndian.Uint64(tail[loc+8:]))
		if off < 0 || off > size-int64(len(rec)) {
			return 0, errors.New("zip64 directory record out of range")
		}
		if _, err := r.ReadAt(rec, off); err != nil {
			return 0, err
		}
		if !bytes.HasPrefix(rec, []byte("PK\x06\x06")) {
			return 0, errors.New("no zip64 directory record where its locator says")
		}
		entries = max(entries, binary.LittleEndian.Uint64(rec[32:]))
		dirSize = max(dirSize, binary.LittleEndian.Uint64(rec[40:]))
	}
	if entries > MaxZipEntries {
		return 0, fmt.Errorf("%d entries exceed the limit of %d", entries, MaxZipEntries)
	}
	if dirSize > MaxZipDirectory {
		return 0, fmt.Errorf("central directory of %d bytes exceeds the limit of %d", dirSize, MaxZipDirectory)
	}
	return int64(dirSize), nil
}

func readEntry(f *zip.File, limit uint64) ([]byte, error) {
	if f.UncompressedSize64 > limit {
		return nil, fmt.Errorf("torch zip: %s: %d bytes exceeds %d", f.Name, f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("torch zip: %s: %w", f.Name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("torch zip: %s: %w", f.Name, err)
	}
	return data, nil
}

// placeTensor finds the bytes of a state dict value in its storage record,
// which must lie inside the file of size bytes.
func placeTensor(name string, v any, entries map[string]*zip.File, dir string, size int64) (safetensors.Tensor, error) {
	t, ok := v.(*Tensor)
	if !ok {
		return safetensors.Tensor{}, fmt.Errorf("%s, not a tensor", pickle.TypeName(v))
	}
	dt, _ := LookupDType(t.DType)
	if dt.Safetensors == "" {
		return safetensors.Tensor{}, fmt.Errorf("dtype %s has no safetensors equivalent", t.DType)
	}
	if !contiguous(t.Shape, t.Stride) {
		return safetensors.Tensor{}, fmt.Errorf("non-contiguous strides %v for shape %v", t.Stride, t.Shape)
	}
	numel := int64(1)
	for _, d := range t.Shape {
		if d != 0 && numel > (1<<62)/d/dt.Size {
			return safetensors.Tensor{}, errors.New("shape overflows")
		}
		numel *= d
	}
	f := entries[dir+"data/"+t.Storage.Key]
	if f == nil {
		return safetensors.Tensor{}, fmt.Errorf("storage %s has no record", t.Storage.Key)
	}
	if f.Method != zip.Store || f.CompressedSize64 != f.UncompressedSize64 {
		return safetensors.Tensor{}, fmt.Errorf("storage %s is compressed", t.Storage.Key)
	}
	if int64(f.UncompressedSize64) != t.Storage.Bytes {
		return safetensors.Tensor{}, fmt.Errorf("storage %s holds %d bytes, its id says %d", t.Storage.Key, f.UncompressedSize64, t.Storage.Bytes)
	}
	if t.Offset > (1<<62)/dt.Size || (t.Offset+numel)*dt.Size > t.Storage.Bytes {
		return safetensors.Tensor{}, fmt.Errorf("elements %d..%d beyond storage %s of %d bytes", t.Offset, t.Offset+numel, t.Storage.Key, t.Storage.Bytes)
	}
	off, err := f.DataOffset()
	if err != nil {
		return safetensors.Tensor{}, fmt.Errorf("storage %s: %w", t.Storage.Key, err)
	}
	if off < 0 || off > size-t.Storage.Bytes {
		return safetensors.Tensor{}, fmt.Errorf("storage %s at %d..%d runs past the end of the %d-byte file", t.Storage.Key, off, off+t.Storage.Bytes, size)
	}
	begin := off + t.Offset*dt.Size
	return safetensors.Tensor{Name: name, DType: dt.Safetensors, Shape: t.Shape, Begin: begin, End: begin + numel*dt.Size}, nil
}

// contiguous reports whether strides are row-major for shape; dimensions of
// size 1 may have any stride, and an empty tensor is always contiguous.
func contiguous(shape, stride []int64) bool {
	want := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		if shape[i] == 0 {
			return true
		}
		if shape[i] != 1 && stride[i] != want {
			return false
		}
		want *= shape[i]
	}
	return true
}
