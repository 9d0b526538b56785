package torch

import (
	"errors"
	"fmt"
	"maps"
	"math"

	"github.com/ckptfs/ckptfs/layout/pickle"
	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// Storage is one storage record of a torch.save archive, as its
// persistent id names it: archive entry data/Key, Bytes long. DType is the
// torch dtype name ("float32"); for an untyped storage it is set by the
// first tensor that views it.
type Storage struct {
	Key   string
	DType string
	Bytes int64
}

// TypeName names a storage in messages, as pickle.TypeName does a value.
func (*Storage) TypeName() string { return "a storage" }

// Tensor is a tensor as torch._utils._rebuild_tensor_* rebuilds it: a
// strided view of Shape into a storage, Offset elements in.
type Tensor struct {
	Storage *Storage
	DType   string
	Offset  int64
	Shape   []int64
	Stride  []int64
}

// TypeName names a tensor in messages, as pickle.TypeName does a value.
func (*Tensor) TypeName() string { return "a tensor" }

// DType is a torch dtype: its element size and the safetensors dtype of
// the same bytes ("" when safetensors has none).
type DType struct {
	Size        int64
	Safetensors safetensors.DType
}

// dtypes maps torch dtype names to their element size and safetensors
// name ("" when safetensors has none).
var dtypes = map[string]DType{
	"float64": {8, "F64"}, "float32": {4, "F32"}, "float16": {2, "F16"}, "bfloat16": {2, "BF16"},
	"float8_e4m3fn": {1, "F8_E4M3"}, "float8_e5m2": {1, "F8_E5M2"},
	"int64": {8, "I64"}, "int32": {4, "I32"}, "int16": {2, "I16"}, "int8": {1, "I8"},
	"uint64": {8, "U64"}, "uint32": {4, "U32"}, "uint16": {2, "U16"}, "uint8": {1, "U8"},
	"bool": {1, "BOOL"}, "complex64": {8, ""}, "complex128": {16, ""},
}

// LookupDType returns the torch dtype named name ("float32") and whether
// torch has it.
func LookupDType(name string) (DType, bool) {
	dt, ok := dtypes[name]
	return dt, ok
}

// typedStorages maps torch's legacy typed storage classes to their dtype.
var typedStorages = map[string]string{
	"DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
	"BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
	"ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
	"BoolStorage": "bool", "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
}

// untypedStorage is the storage class torch.save names for dtypes that have
// no typed storage class (float8, uint16...); its size is in bytes.
const untypedStorage = "torch.storage.UntypedStorage"

// callables are the only globals a state dict's pickle may call, besides
// collections.OrderedDict, each interpreted here as data, never looked up
// or run.
var callables = map[string]pickle.Callable{
	"torch._utils._rebuild_tensor_v2":            rebuildTensor,
	"torch._utils._rebuild_tensor_v3":            rebuildTensor,
	"torch._utils._rebuild_parameter":            rebuildParameter,
	"torch._utils._rebuild_parameter_with_state": rebuildParameter,
}

// names are the globals that may appear in a state dict's pickle without
// being called: the storage classes and the dtypes.
var names = func() map[string]bool {
	out := map[string]bool{untypedStorage: true}
	for class := range typedStorages {
		out["torch."+class] = true
	}
	for dtype := range dtypes {
		out["torch."+dtype] = true
	}
	return out
}()

// stateDict is a pickle of a state dict of tensors being read: the
// storages its persistent ids name, by key and in order of appearance.
type stateDict struct {
	storages map[string]*Storage
	order    []*Storage
}

// PickleRules returns the rules a pickle torch writes is read with: the
// globals a state dict of tensors needs (the tensor and parameter
// rebuilders, storage classes, dtypes) and its storages by their
// persistent ids. They are new for each pickle, and the caller's to extend
// (a DCP .metadata admits its dataclasses besides).
func PickleRules() *pickle.Rules {
	return new(stateDict).rules()
}

func (sd *stateDict) rules() *pickle.Rules {
	sd.storages = map[string]*Storage{}
	return &pickle.Rules{
		Names:          maps.Clone(names),
		Callables:      maps.Clone(callables),
		PersistentLoad: sd.storage,
		IgnoresState:   isTensor,
	}
}

// isTensor reports whether v is a tensor, whose BUILD state (its hooks and
// metadata) is ignored.
func isTensor(v any) bool {
	_, ok := v.(*Tensor)
	return ok
}

// pickled is what a restricted read of a torch.save pickle found: the root
// object and every storage named anywhere in it, in order of appearance.
type pickled struct {
	Root     any
	Storages []*Storage
}

// parsePickle reads a torch.save data.pkl without executing it, through
// pickle.Parse with PickleRules: anything but plain data and the globals a
// state dict of tensors needs (os.system, an arbitrary class) is refused
// with an error naming it.
func parsePickle(data []byte) (*pickled, error) {
	var sd stateDict
	root, _, err := pickle.Parse(data, sd.rules())
	if err != nil {
		return nil, err
	}
	return &pickled{Root: root, Storages: sd.order}, nil
}

// storage interprets a persistent id ('storage', class, key, location, numel).
func (sd *stateDict) storage(pid any) (any, error) {
	t, ok := pid.(pickle.Tuple)
	if !ok || len(t) != 5 || t[0] != "storage" {
		return nil, fmt.Errorf("persistent id is %s, not a storage", pickle.TypeName(pid))
	}
	class, ok1 := t[1].(pickle.Global)
	key, ok2 := t[2].(string)
	numel, ok3 := t[4].(int64)
	if !ok1 || !ok2 || !ok3 || numel < 0 {
		return nil, errors.New("malformed storage persistent id")
	}
	if s, ok := sd.storages[key]; ok {
		return s, nil
	}
	s := &Storage{Key: key}
	if class.Module+"."+class.Name == untypedStorage {
		s.Bytes = numel
	} else {
		dtype, ok := typedStorages[class.Name]
		if !ok || class.Module != "torch" {
			return nil, fmt.Errorf("%s.%s is not a storage class", class.Module, class.Name)
		}
		size := dtypes[dtype].Size
		if numel > math.MaxInt64/size {
			return nil, errors.New("storage size overflows")
		}
		s.DType, s.Bytes = dtype, numel*size
	}
	sd.storages[key] = s
	sd.order = append(sd.order, s)
	return s, nil
}

// rebuildTensor interprets _rebuild_tensor_v2(storage, offset, size, stride,
// requires_grad, hooks[, metadata]) and _rebuild_tensor_v3(..., hooks,
// dtype[, metadata]).
func rebuildTensor(m *pickle.Machine, args pickle.Tuple) (any, error) {
	if len(args) < 6 {
		return nil, fmt.Errorf("%d arguments, need at least 6", len(args))
	}
	for _, a := range args[2:4] {
		if err := m.SpendCopy(a); err != nil {
			return nil, err
		}
	}
	s, ok := args[0].(*Storage)
	offset, ok2 := args[1].(int64)
	if !ok || !ok2 || offset < 0 {
		return nil, errors.New("malformed storage or offset")
	}
	shape, err := pickle.Ints(args[2])
	if err != nil {
		return nil, fmt.Errorf("size: %w", err)
	}
	stride, err := pickle.Ints(args[3])
	if err != nil {
		return nil, fmt.Errorf("stride: %w", err)
	}
	if len(shape) != len(stride) {
		return nil, fmt.Errorf("size %v and stride %v differ in rank", shape, stride)
	}
	t := &Tensor{Storage: s, DType: s.DType, Offset: offset, Shape: shape, Stride: stride}
	if len(args) >= 7 {
		if g, ok := args[6].(pickle.Global); ok { // v3's dtype
			if _, known := dtypes[g.Name]; !known || g.Module != "torch" {
				return nil, fmt.Errorf("%s.%s is not a dtype", g.Module, g.Name)
			}
			t.DType = g.Name
			if s.DType == "" {
				s.DType = g.Name
			}
		}
	}
	if t.DType == "" {
		return nil, errors.New("tensor of an untyped storage without a dtype")
	}
	return t, nil
}

// rebuildParameter unwraps an nn.Parameter to its tensor.
func rebuildParameter(_ *pickle.Machine, args pickle.Tuple) (any, error) {
	if len(args) < 1 {
		return nil, errors.New("no data argument")
	}
	t, ok := args[0].(*Tensor)
	if !ok {
		return nil, fmt.Errorf("data is %s, not a tensor", pickle.TypeName(args[0]))
	}
	return t, nil
}
