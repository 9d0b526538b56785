// Package dcp reads torch.distributed.checkpoint (DCP) checkpoints: the
// .metadata pickle, through the restricted pickle reader with DCP's
// dataclasses admitted, and the plan of a folder's model view, its tensors
// assembled from the chunks the ranks saved in their .distcp files.
package dcp

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/ckptfs/ckptfs/layout/pickle"
	"github.com/ckptfs/ckptfs/layout/torch"
)

// A torch.distributed.checkpoint (DCP) folder holds .metadata, a pickle of
// torch.distributed.checkpoint.metadata.Metadata, and one .distcp file per
// rank (and writer thread) with the bytes of each rank's chunks.

// MetadataName is the name of a DCP checkpoint's metadata file.
const MetadataName = ".metadata"

// Versions are the metadata versions read: "" is what torch 2.5 and
// earlier wrote (no version field), "1.0.0" what torch 2.6 to 2.15 write.
var Versions = []string{"", "1.0.0"}

// Checkpoint is what a .metadata says, as data.
type Checkpoint struct {
	Version string
	Tensors []Tensor // in the order .metadata lists them
	// Paths gives, for a flattened name, the keys of the nested state dict
	// it came from (planner_data): "model.a" from {"model": {"a": ...}} is
	// ["model", "a"]. Names it lacks were not nested.
	Paths map[string][]string
	// Skipped are the entries that are not tensors (BytesStorageMetadata:
	// pickled values such as a step count, or optimizer hyperparameters).
	Skipped []string
}

// Tensor is one tensor of the state dict: its full size and the chunks
// the ranks saved.
type Tensor struct {
	FQN    string
	DType  string // torch dtype name ("float32")
	Size   []int64
	Chunks []Chunk
}

// Chunk is the part of a tensor one rank saved, and where its bytes are.
type Chunk struct {
	Offsets, Sizes []int64
	Storage        Storage
}

// Storage is a chunk's _StorageInfo: Length bytes of file Path at
// Offset, read through the storage transforms named (compression
// extensions), if any.
type Storage struct {
	Path       string
	Offset     int64
	Length     int64
	Transforms []string
}

// Names of the classes and functions a DCP .metadata pickle may use.
const (
	metadataModule   = "torch.distributed.checkpoint.metadata."
	filesystemModule = "torch.distributed.checkpoint.filesystem."
)

// MaxWork is the work budget of a .metadata (see pickle.MaxWork): a
// chunk costs about 160 (its objects, its storage_data entry and its
// memo entries), so this admits some 100,000 chunks, the weights and
// AdamW state of a 7B model saved by 128 ranks. It costs at most about
// 1 GiB while the file is read, 36 bytes a unit for a real one.
const MaxWork = 16 << 20

// metadataClasses are the DCP metadata dataclasses, read as objects with
// state.
var metadataClasses = map[string]bool{
	metadataModule + "Metadata": true, metadataModule + "TensorStorageMetadata": true,
	metadataModule + "BytesStorageMetadata": true, metadataModule + "ChunkStorageMetadata": true,
	metadataModule + "TensorProperties": true, metadataModule + "MetadataIndex": true,
	metadataModule + "StorageMeta": true, filesystemModule + "_StorageInfo": true,
}

// metadataCallables read the few values the dataclasses hold: torch.Size,
// the memory-format enum, torch's layout lookup and the checkpoint's path.
var metadataCallables = map[string]pickle.Callable{
	"torch.Size":                            sizeOf,
	metadataModule + "_MEM_FORMAT_ENCODING": enumValue,
	"torch.serialization._get_layout":       layoutName,
	"pathlib.PosixPath":                     pathOf,
	"pathlib.PurePosixPath":                 pathOf,
}

// metadataRules are the rules of one .metadata: a state dict's
// (torch.PickleRules) and, besides, the DCP metadata dataclasses and the
// values they hold, with MaxWork. Everything else is refused by name as
// in a state dict.
func metadataRules() *pickle.Rules {
	r := torch.PickleRules()
	r.Work = MaxWork
	r.Classes = metadataClasses
	maps.Copy(r.Callables, metadataCallables)
	return r
}

// sizeOf reads torch.Size((d0, d1, ...)) as its tuple of dimensions,
// paying for the copy: the tuple may be memoized and used again.
func sizeOf(m *pickle.Machine, args pickle.Tuple) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("%d arguments, need 1", len(args))
	}
	if err := m.SpendCopy(args[0]); err != nil {
		return nil, err
	}
	dims, err := pickle.Ints(args[0])
	if err != nil {
		return nil, err
	}
	return dims, nil
}

// enumValue reads an enum member by its value.
func enumValue(_ *pickle.Machine, args pickle.Tuple) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("%d arguments, need 1", len(args))
	}
	if _, ok := args[0].(int64); !ok {
		return nil, fmt.Errorf("value is %s, not an int", pickle.TypeName(args[0]))
	}
	return args[0], nil
}

// layoutName reads _get_layout("torch.strided") as the layout's name.
func layoutName(_ *pickle.Machine, args pickle.Tuple) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("%d arguments, need 1", len(args))
	}
	name, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("layout is %s, not a str", pickle.TypeName(args[0]))
	}
	return name, nil
}

// MaxPath bounds a path a .metadata builds with PosixPath(*parts), as
// PATH_MAX does a path the kernel takes.
const MaxPath = 4 << 10

// pathOf reads PosixPath(*parts) as its parts joined, paying for each
// part and each byte built: the parts may be one memoized tuple of many
// references to one long string, which costs the file a few bytes.
func pathOf(m *pickle.Machine, args pickle.Tuple) (any, error) {
	if err := m.Spend(len(args)); err != nil {
		return nil, err
	}
	n := 0
	for i, a := range args {
		s, ok := a.(string)
		if !ok {
			return nil, fmt.Errorf("part %d is %s, not a str", i, pickle.TypeName(a))
		}
		if i > 0 {
			n++ // the separator
		}
		if n += len(s); n > MaxPath {
			return nil, fmt.Errorf("path of more than %d bytes", MaxPath)
		}
	}
	if err := m.Spend(n); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.Grow(n)
	for i, a := range args {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(a.(string))
	}
	return b.String(), nil
}

// ParseMetadata reads a DCP .metadata pickle without executing it, with
// the size limit of a data.pkl (pickle.MaxSize) and MaxWork. It checks the
// structure, not that the chunks tile their tensors (Plan does).
func ParseMetadata(data []byte) (*Checkpoint, error) {
	if len(data) > pickle.MaxSize {
		return nil, fmt.Errorf("dcp metadata: %d bytes exceeds %d", len(data), pickle.MaxSize)
	}
	root, m, err := pickle.Parse(data, metadataRules())
	if err != nil {
		return nil, fmt.Errorf("dcp metadata: %w", err)
	}
	ck, err := readCheckpoint(root, m)
	if err != nil {
		return nil, fmt.Errorf("dcp metadata: %w", err)
	}
	return ck, nil
}

// readCheckpoint takes the pickle's objects apart, paying for every chunk,
// dimension, path key and transform it walks from what the pickle left of
// its budget: a chunk list, a tuple or a torch.Size is built once and may
// be referenced a million times.
func readCheckpoint(root any, m *pickle.Machine) (*Checkpoint, error) {
	md, err := objectState(root, metadataModule+"Metadata")
	if err != nil {
		return nil, err
	}
	ck := &Checkpoint{Paths: map[string][]string{}}
	if v, ok := md.Get("version"); ok && v != nil {
		if ck.Version, ok = v.(string); !ok {
			return nil, fmt.Errorf("version is %s, not a str", pickle.TypeName(v))
		}
	}
	if !slices.Contains(Versions, ck.Version) {
		return nil, fmt.Errorf("metadata version %q not known (known: %q)", ck.Version, Versions)
	}
	storage, err := readStorage(md, m)
	if err != nil {
		return nil, err
	}
	sdm, err := dictField(md, "state_dict_metadata")
	if err != nil {
		return nil, err
	}
	for i, k := range sdm.Keys {
		fqn, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("state_dict_metadata key %d is %s, not a str", i, pickle.TypeName(k))
		}
		o, ok := sdm.Values[i].(*pickle.Object)
		if ok && o.Class == metadataModule+"BytesStorageMetadata" {
			ck.Skipped = append(ck.Skipped, fqn)
			continue
		}
		t, err := readTensor(fqn, sdm.Values[i], storage, m)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", fqn, err)
		}
		ck.Tensors = append(ck.Tensors, t)
	}
	if pd, ok := md.Get("planner_data"); ok {
		if d, ok := pd.(*pickle.Dict); ok {
			if err := readPaths(d, ck.Paths, m); err != nil {
				return nil, err
			}
		}
	}
	return ck, nil
}

// readPaths reads planner_data, {fqn: (key, key, ...)}; entries of another
// shape (a custom planner's) are ignored: names then count as not nested.
// Every path is paid for, as it may be one memoized tuple.
func readPaths(d *pickle.Dict, out map[string][]string, m *pickle.Machine) error {
	for i, k := range d.Keys {
		fqn, ok := k.(string)
		t, ok2 := d.Values[i].(pickle.Tuple)
		if !ok || !ok2 {
			continue
		}
		if err := m.Spend(1 + len(t)); err != nil {
			return err
		}
		path := make([]string, 0, len(t))
		for _, p := range t {
			switch p := p.(type) {
			case string:
				path = append(path, p)
			case int64:
				path = append(path, fmt.Sprint(p))
			}
		}
		if len(path) == len(t) {
			out[fqn] = path
		}
	}
	return nil
}

// chunkKey names a chunk as MetadataIndex does: its tensor and offsets.
func chunkKey(fqn string, offsets []int64) string {
	return fmt.Sprint(fqn, offsets)
}

// readStorage reads storage_data, {MetadataIndex: _StorageInfo}, by chunkKey.
func readStorage(md *pickle.Dict, m *pickle.Machine) (map[string]Storage, error) {
	sd, err := dictField(md, "storage_data")
	if err != nil {
		return nil, fmt.Errorf("%w (only FileSystemWriter checkpoints are read)", err)
	}
	out := make(map[string]Storage, len(sd.Keys))
	for i, k := range sd.Keys {
		idx, err := objectState(k, metadataModule+"MetadataIndex")
		if err != nil {
			return nil, fmt.Errorf("storage_data key %d: %w", i, err)
		}
		fqn, err := stringField(idx, "fqn")
		if err != nil {
			return nil, fmt.Errorf("storage_data key %d: %w", i, err)
		}
		var offsets []int64
		if v, ok := idx.Get("offset"); ok && v != nil {
			if offsets, ok = v.([]int64); !ok {
				return nil, fmt.Errorf("storage_data %q: offset is %s, not a torch.Size", fqn, pickle.TypeName(v))
			}
		}
		if err := m.Spend(1 + len(offsets) + len(fqn)/64); err != nil {
			return nil, err
		}
		info, err := objectState(sd.Values[i], filesystemModule+"_StorageInfo")
		if err != nil {
			return nil, fmt.Errorf("storage_data %q: %w", fqn, err)
		}
		s, err := storageInfo(info, m)
		if err != nil {
			return nil, fmt.Errorf("storage_data %q: %w", fqn, err)
		}
		out[chunkKey(fqn, offsets)] = s
	}
	return out, nil
}

// storageInfo reads a _StorageInfo, paying for its transform descriptors:
// one memoized _StorageInfo may serve every chunk.
func storageInfo(info *pickle.Dict, m *pickle.Machine) (Storage, error) {
	var s Storage
	var err error
	if s.Path, err = stringField(info, "relative_path"); err != nil {
		return s, err
	}
	if s.Offset, err = intField(info, "offset"); err != nil {
		return s, err
	}
	if s.Length, err = intField(info, "length"); err != nil {
		return s, err
	}
	if v, ok := info.Get("transform_descriptors"); ok && v != nil {
		var items []any
		switch v := v.(type) {
		case *pickle.List:
			items = v.Items
		case pickle.Tuple:
			items = v
		default:
			return s, fmt.Errorf("transform_descriptors is %s", pickle.TypeName(v))
		}
		if err := m.Spend(len(items)); err != nil {
			return s, err
		}
		for _, d := range items {
			name, ok := d.(string)
			if !ok {
				return s, fmt.Errorf("a transform descriptor is %s", pickle.TypeName(d))
			}
			s.Transforms = append(s.Transforms, name)
		}
	}
	return s, nil
}

func readTensor(fqn string, v any, storage map[string]Storage, m *pickle.Machine) (Tensor, error) {
	t := Tensor{FQN: fqn}
	md, err := objectState(v, metadataModule+"TensorStorageMetadata")
	if err != nil {
		return t, err
	}
	props, ok := md.Get("properties")
	if !ok {
		return t, errors.New("no properties")
	}
	if t.DType, err = propertiesDType(props); err != nil {
		return t, err
	}
	size, ok := md.Get("size")
	if t.Size, ok = size.([]int64); !ok {
		return t, fmt.Errorf("size is %s, not a torch.Size", pickle.TypeName(size))
	}
	chunks, ok := md.Get("chunks")
	list, ok2 := chunks.(*pickle.List)
	if !ok || !ok2 {
		return t, fmt.Errorf("chunks is %s, not a list", pickle.TypeName(chunks))
	}
	if err := m.Spend(1 + len(t.Size) + len(fqn)/64); err != nil {
		return t, err
	}
	for i, c := range list.Items {
		cm, err := objectState(c, metadataModule+"ChunkStorageMetadata")
		if err != nil {
			return t, fmt.Errorf("chunk %d: %w", i, err)
		}
		offsets, _ := cm.Get("offsets")
		sizes, _ := cm.Get("sizes")
		ch := Chunk{}
		if ch.Offsets, ok = offsets.([]int64); !ok {
			return t, fmt.Errorf("chunk %d: offsets is %s", i, pickle.TypeName(offsets))
		}
		if ch.Sizes, ok = sizes.([]int64); !ok {
			return t, fmt.Errorf("chunk %d: sizes is %s", i, pickle.TypeName(sizes))
		}
		if err := m.Spend(1 + len(ch.Offsets) + len(ch.Sizes) + len(fqn)/64); err != nil {
			return t, err
		}
		if ch.Storage, ok = storage[chunkKey(fqn, ch.Offsets)]; !ok {
			return t, fmt.Errorf("chunk at %v has no storage_data entry", ch.Offsets)
		}
		t.Chunks = append(t.Chunks, ch)
	}
	return t, nil
}

// propertiesDType reads the dtype from TensorProperties' state: the tuple
// its __getstate__ returns (dtype, layout, requires_grad, memory format,
// pin_memory[, strides]), or, as older pickles had it, a dict.
func propertiesDType(v any) (string, error) {
	o, ok := v.(*pickle.Object)
	if !ok || o.Class != metadataModule+"TensorProperties" {
		return "", fmt.Errorf("properties is %s", pickle.TypeName(v))
	}
	var dtype any
	switch s := o.State.(type) {
	case pickle.Tuple:
		if len(s) < 5 || len(s) > 6 {
			return "", fmt.Errorf("properties of %d items", len(s))
		}
		dtype = s[0]
	case *pickle.Dict:
		dtype, _ = s.Get("dtype")
	default:
		return "", fmt.Errorf("properties state is %s", pickle.TypeName(o.State))
	}
	g, ok := dtype.(pickle.Global)
	if !ok || g.Module != "torch" {
		return "", fmt.Errorf("dtype is %s", pickle.TypeName(dtype))
	}
	if _, known := torch.LookupDType(g.Name); !known {
		return "", fmt.Errorf("torch.%s is not a dtype", g.Name)
	}
	return g.Name, nil
}

// objectState returns the state dict of an object of class.
func objectState(v any, class string) (*pickle.Dict, error) {
	o, ok := v.(*pickle.Object)
	if !ok || o.Class != class {
		return nil, fmt.Errorf("%s where a %s belongs", pickle.TypeName(v), class)
	}
	d, ok := o.State.(*pickle.Dict)
	if !ok {
		return nil, fmt.Errorf("%s has state %s, not a dict", class, pickle.TypeName(o.State))
	}
	return d, nil
}

func dictField(d *pickle.Dict, name string) (*pickle.Dict, error) {
	v, _ := d.Get(name)
	f, ok := v.(*pickle.Dict)
	if !ok {
		return nil, fmt.Errorf("%s is %s, not a dict", name, pickle.TypeName(v))
	}
	return f, nil
}

func stringField(d *pickle.Dict, name string) (string, error) {
	v, _ := d.Get(name)
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s is %s, not a str", name, pickle.TypeName(v))
	}
	return s, nil
}

func intField(d *pickle.Dict, name string) (int64, error) {
	v, _ := d.Get(name)
	n, ok := v.(int64)
	if !ok || n < 0 || n > math.MaxInt64/2 {
		return 0, fmt.Errorf("%s is %s, not a non-negative int", name, pickle.TypeName(v))
	}
	return n, nil
}
