// Package pickle reads the pickles torch writes (a torch.save data.pkl, a
// DCP .metadata) without executing them: a restricted machine that knows
// the opcodes of protocols 2 to 5 that build plain data, admits only the
// globals its rules name, interprets those as data, and bounds the work a
// pickle may make it do.
package pickle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// MaxSize bounds the data.pkl a torch.save archive may have: a state
// dict's pickle holds names and shapes, about 200 bytes a tensor.
const MaxSize = 64 << 20

// MaxWork bounds what one pickle may make the reader do: every object
// pushed and every item copied into a container counts one. A state dict
// costs about 45 a tensor, so this admits some 90,000 tensors; without it
// DUP and memo references amplify a small pickle into gigabytes, and an
// OrderedDict built again and again from one memoized list into hours.
//
// Values may nest to any depth, and APPEND can even put a list into
// itself; nothing in this package walks them recursively (they are taken
// apart one level at a time, never printed with %v), so depth costs only
// the objects it takes, which this budget bounds.
const MaxWork = 4 << 20

// TorchStorage is one storage record of a torch.save archive, as its
// persistent id names it: archive entry data/Key, Bytes long. DType is the
// torch dtype name ("float32"); for an untyped storage it is set by the
// first tensor that views it.
type TorchStorage struct {
	Key   string
	DType string
	Bytes int64
}

// TorchTensor is a tensor as torch._utils._rebuild_tensor_* rebuilds it: a
// strided view of Shape into a storage, Offset elements in.
type TorchTensor struct {
	Storage *TorchStorage
	DType   string
	Offset  int64
	Shape   []int64
	Stride  []int64
}

// Pickled is what a restricted read of a torch.save pickle found: the root
// object and every storage named anywhere in it, in order of appearance.
type Pickled struct {
	Root     any
	Storages []*TorchStorage
}

// Dict is a Python dict or OrderedDict with its keys in insertion
// order. Keys are strings, integers or tuples of them.
type Dict struct {
	Keys   []any
	Values []any
	byName map[string]int // index of each string key, for repeated keys
}

// Tuple is a Python tuple.
type Tuple []any

// List is a Python list. It may hold itself: APPEND can put a list into
// itself.
type List struct{ Items []any }

// Global is a global a pickle names, module and name, never looked up.
type Global struct{ Module, Name string }

// TorchDType is a torch dtype: its element size and the safetensors dtype
// of the same bytes ("" when safetensors has none).
type TorchDType struct {
	Size        int64
	Safetensors safetensors.DType
}

// torchDTypes maps torch dtype names to their element size and safetensors
// name ("" when safetensors has none).
var torchDTypes = map[string]TorchDType{
	"float64": {8, "F64"}, "float32": {4, "F32"}, "float16": {2, "F16"}, "bfloat16": {2, "BF16"},
	"float8_e4m3fn": {1, "F8_E4M3"}, "float8_e5m2": {1, "F8_E5M2"},
	"int64": {8, "I64"}, "int32": {4, "I32"}, "int16": {2, "I16"}, "int8": {1, "I8"},
	"uint64": {8, "U64"}, "uint32": {4, "U32"}, "uint16": {2, "U16"}, "uint8": {1, "U8"},
	"bool": {1, "BOOL"}, "complex64": {8, ""}, "complex128": {16, ""},
}

// LookupTorchDType returns the torch dtype named name ("float32") and
// whether torch has it.
func LookupTorchDType(name string) (TorchDType, bool) {
	dt, ok := torchDTypes[name]
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

// callables are the only globals a pickle may call, each interpreted here
// as data, never looked up or run.
var callables = map[string]func(*Machine, Tuple) (any, error){
	"collections.OrderedDict":                    newOrderedDict,
	"torch._utils._rebuild_tensor_v2":            rebuildTensor,
	"torch._utils._rebuild_tensor_v3":            rebuildTensor,
	"torch._utils._rebuild_parameter":            rebuildParameter,
	"torch._utils._rebuild_parameter_with_state": rebuildParameter,
}

// allowedGlobal reports whether a global may appear: a callable above, a
// storage class, or a dtype.
func allowedGlobal(g Global) bool {
	full := g.Module + "." + g.Name
	if _, ok := callables[full]; ok || full == untypedStorage {
		return true
	}
	if g.Module != "torch" {
		return false
	}
	_, storage := typedStorages[g.Name]
	_, dtype := torchDTypes[g.Name]
	return storage || dtype
}

// ParsePickle reads a torch.save data.pkl without executing it. It knows
// the opcodes of pickle protocols 2 to 5 that build plain data, and the
// globals a state dict of tensors needs; anything else (os.system, an
// arbitrary class) is refused with an error naming it.
func ParsePickle(data []byte) (*Pickled, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("pickle: %d bytes exceeds %d", len(data), MaxSize)
	}
	root, m, err := Run(data, nil)
	if err != nil {
		return nil, err
	}
	return &Pickled{Root: root, Storages: m.order}, nil
}

// Run interprets data with the globals allowedGlobal admits, and
// those of extra, if any, besides. It returns the machine, whose work
// budget what is left pays for walking the result.
func Run(data []byte, extra *Rules) (any, *Machine, error) {
	m := &Machine{data: data, memo: map[uint64]any{}, storages: map[string]*TorchStorage{}, work: MaxWork, extra: extra}
	if extra != nil {
		m.work = extra.Work
	}
	m.limit = m.work
	root, err := m.run()
	if err != nil {
		return nil, nil, fmt.Errorf("pickle: at byte %d: %w", m.pos, err)
	}
	return root, m, nil
}

// Rules admit more globals than a state dict needs, for a pickle of
// another kind (DCP's .metadata): classes that NEWOBJ may instantiate and
// BUILD give state, and callables interpreted as data.
type Rules struct {
	Work      int // the work budget, instead of MaxWork
	Classes   map[string]bool
	Callables map[string]func(*Machine, Tuple) (any, error)
}

// Object is an instance of a class Rules admit: its class and the state
// BUILD gave it (a dict or a tuple), never run.
type Object struct {
	Class string
	State any
}

// Machine is the state of one pickle being read, handed to the callables
// the rules admit so that they pay for what they build.
type Machine struct {
	data     []byte
	pos      int
	stack    []any
	marks    []int
	memo     map[uint64]any
	storages map[string]*TorchStorage
	order    []*TorchStorage
	work     int    // left of limit
	limit    int    // MaxWork, or the extra rules' budget
	extra    *Rules // nil for a torch.save pickle
}

var errTruncated = errors.New("truncated")

// Spend takes n from the work budget.
func (m *Machine) Spend(n int) error {
	if m.work -= n; m.work < 0 {
		return fmt.Errorf("more than %d objects built: over the reader's limit", m.limit)
	}
	return nil
}

// SpendCopy pays for copying v's items out when v is a tuple: a memoized
// tuple costs one opcode however many times it is used again.
func (m *Machine) SpendCopy(v any) error {
	if t, ok := v.(Tuple); ok {
		return m.Spend(len(t))
	}
	return nil
}

func (m *Machine) read(n int) ([]byte, error) {
	if n < 0 || n > len(m.data)-m.pos {
		return nil, errTruncated
	}
	b := m.data[m.pos : m.pos+n]
	m.pos += n
	return b, nil
}

func (m *Machine) readUint(n int) (uint64, error) {
	b, err := m.read(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// readLine reads up to a newline, for GLOBAL's text operands.
func (m *Machine) readLine() (string, error) {
	for i := m.pos; i < len(m.data); i++ {
		if m.data[i] == '\n' {
			s := string(m.data[m.pos:i])
			m.pos = i + 1
			return s, nil
		}
	}
	return "", errTruncated
}

func (m *Machine) push(v any) { m.stack = append(m.stack, v) }

func (m *Machine) pop() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) == m.marks[len(m.marks)-1]) {
		return nil, errors.New("stack underflow")
	}
	v := m.stack[len(m.stack)-1]
	m.stack = m.stack[:len(m.stack)-1]
	return v, nil
}

func (m *Machine) top() (any, error) {
	if len(m.stack) == 0 {
		return nil, errors.New("stack underflow")
	}
	return m.stack[len(m.stack)-1], nil
}

// popMark pops everything above the last MARK.
func (m *Machine) popMark() ([]any, error) {
	if len(m.marks) == 0 {
		return nil, errors.New("no MARK")
	}
	at := m.marks[len(m.marks)-1]
	m.marks = m.marks[:len(m.marks)-1]
	items := m.stack[at:]
	if err := m.Spend(len(items)); err != nil {
		return nil, err
	}
	items = append([]any(nil), items...)
	m.stack = m.stack[:at]
	return items, nil
}

func (m *Machine) popN(n int) ([]any, error) {
	items := make([]any, n)
	for i := n - 1; i >= 0; i-- {
		v, err := m.pop()
		if err != nil {
			return nil, err
		}
		items[i] = v
	}
	return items, nil
}

func (m *Machine) pushString(n int, asBytes bool) error {
	b, err := m.read(n)
	if err != nil {
		return err
	}
	if asBytes {
		m.push(append([]byte(nil), b...))
	} else {
		m.push(string(b))
	}
	return nil
}

func (m *Machine) pushSized(width int, asBytes bool) error {
	n, err := m.readUint(width)
	if err != nil {
		return err
	}
	if n > uint64(len(m.data)) {
		return errTruncated
	}
	return m.pushString(int(n), asBytes)
}

func (m *Machine) memoize(key uint64) error {
	v, err := m.top()
	if err != nil {
		return err
	}
	m.memo[key] = v
	return nil
}

func (m *Machine) recall(width int) error {
	key, err := m.readUint(width)
	if err != nil {
		return err
	}
	v, ok := m.memo[key]
	if !ok {
		return fmt.Errorf("memo key %d not set", key)
	}
	m.push(v)
	return nil
}

func (m *Machine) global(module, name string) error {
	g := Global{module, name}
	if !allowedGlobal(g) && !m.extra.admits(module+"."+name) {
		return fmt.Errorf("global %s.%s refused: only state dicts of tensors are read", module, name)
	}
	m.push(g)
	return nil
}

// admits reports whether r names a class or callable full.
func (r *Rules) admits(full string) bool {
	if r == nil {
		return false
	}
	_, call := r.Callables[full]
	return call || r.Classes[full]
}

// run interprets opcodes until STOP and returns the object left on the stack.
func (m *Machine) run() (any, error) {
	for {
		opb, err := m.read(1)
		if err != nil {
			return nil, err
		}
		if err := m.Spend(1); err != nil { // an opcode pushes at most one object
			return nil, err
		}
		op := opb[0]
		switch op {
		case 0x80: // PROTO
			v, err := m.readUint(1)
			if err != nil {
				return nil, err
			}
			if v < 2 || v > 5 {
				return nil, fmt.Errorf("protocol %d not supported", v)
			}
		case 0x95: // FRAME: framing is only a hint for buffered readers
			_, err = m.read(8)
		case '.': // STOP
			if len(m.stack) != 1 || len(m.marks) != 0 {
				return nil, fmt.Errorf("STOP with %d objects on the stack", len(m.stack))
			}
			return m.stack[0], nil
		case '(': // MARK
			m.marks = append(m.marks, len(m.stack))
		case '0': // POP
			_, err = m.pop()
		case '1': // POP_MARK
			_, err = m.popMark()
		case '2': // DUP
			var v any
			if v, err = m.top(); err == nil {
				m.push(v)
			}
		case 'N': // NONE
			m.push(nil)
		case 0x88: // NEWTRUE
			m.push(true)
		case 0x89: // NEWFALSE
			m.push(false)
		case 'J': // BININT
			var v uint64
			if v, err = m.readUint(4); err == nil {
				m.push(int64(int32(uint32(v))))
			}
		case 'K': // BININT1
			var v uint64
			if v, err = m.readUint(1); err == nil {
				m.push(int64(v))
			}
		case 'M': // BININT2
			var v uint64
			if v, err = m.readUint(2); err == nil {
				m.push(int64(v))
			}
		case 0x8a: // LONG1
			err = m.long1()
		case 'G': // BINFLOAT
			var b []byte
			if b, err = m.read(8); err == nil {
				m.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
			}
		case 'X': // BINUNICODE
			err = m.pushSized(4, false)
		case 0x8c: // SHORT_BINUNICODE
			err = m.pushSized(1, false)
		case 0x8d: // BINUNICODE8
			err = m.pushSized(8, false)
		case 'T': // BINSTRING (Python 2 str)
			err = m.pushSized(4, false)
		case 'U': // SHORT_BINSTRING
			err = m.pushSized(1, false)
		case 'B': // BINBYTES
			err = m.pushSized(4, true)
		case 'C': // SHORT_BINBYTES
			err = m.pushSized(1, true)
		case 0x8e: // BINBYTES8
			err = m.pushSized(8, true)
		case ')': // EMPTY_TUPLE
			m.push(Tuple{})
		case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
			var items []any
			if items, err = m.popN(int(op-0x85) + 1); err == nil {
				m.push(Tuple(items))
			}
		case 't': // TUPLE
			var items []any
			if items, err = m.popMark(); err == nil {
				m.push(Tuple(items))
			}
		case ']': // EMPTY_LIST
			m.push(&List{})
		case 'l': // LIST
			var items []any
			if items, err = m.popMark(); err == nil {
				m.push(&List{Items: items})
			}
		case 'a': // APPEND
			err = m.appendItems(false)
		case 'e': // APPENDS
			err = m.appendItems(true)
		case '}': // EMPTY_DICT
			m.push(&Dict{})
		case 'd': // DICT
			var items []any
			if items, err = m.popMark(); err == nil {
				d := &Dict{}
				if err = m.setDictItems(d, items); err == nil {
					m.push(d)
				}
			}
		case 's': // SETITEM
			err = m.setItems(false)
		case 'u': // SETITEMS
			err = m.setItems(true)
		case 'q': // BINPUT
			var k uint64
			if k, err = m.readUint(1); err == nil {
				err = m.memoize(k)
			}
		case 'r': // LONG_BINPUT
			var k uint64
			if k, err = m.readUint(4); err == nil {
				err = m.memoize(k)
			}
		case 0x94: // MEMOIZE
			err = m.memoize(uint64(len(m.memo)))
		case 'h': // BINGET
			err = m.recall(1)
		case 'j': // LONG_BINGET
			err = m.recall(4)
		case 'c': // GLOBAL
			var module, name string
			if module, err = m.readLine(); err == nil {
				if name, err = m.readLine(); err == nil {
					err = m.global(module, name)
				}
			}
		case 0x93: // STACK_GLOBAL
			var items []any
			if items, err = m.popN(2); err == nil {
				module, ok1 := items[0].(string)
				name, ok2 := items[1].(string)
				if !ok1 || !ok2 {
					return nil, errors.New("STACK_GLOBAL of non-strings")
				}
				err = m.global(module, name)
			}
		case 'Q': // BINPERSID
			var pid any
			if pid, err = m.pop(); err == nil {
				var s *TorchStorage
				if s, err = m.storage(pid); err == nil {
					m.push(s)
				}
			}
		case 'R': // REDUCE
			err = m.reduce()
		case 0x81: // NEWOBJ
			err = m.newObject()
		case 'b': // BUILD
			err = m.build()
		default:
			return nil, fmt.Errorf("opcode 0x%02x refused", op)
		}
		if err != nil {
			return nil, err
		}
	}
}

// long1 reads a little-endian two's complement integer of up to 8 bytes.
func (m *Machine) long1() error {
	n, err := m.readUint(1)
	if err != nil {
		return err
	}
	if n > 8 {
		return fmt.Errorf("integer of %d bytes too large", n)
	}
	v, err := m.readUint(int(n))
	if err != nil {
		return err
	}
	if n > 0 && n < 8 && v&(1<<(8*n-1)) != 0 {
		v |= ^uint64(0) << (8 * n) // sign-extend
	}
	m.push(int64(v))
	return nil
}

func (m *Machine) appendItems(many bool) error {
	items, top, err := m.popItems(many, 1)
	if err != nil {
		return err
	}
	l, ok := top.(*List)
	if !ok {
		return fmt.Errorf("APPEND to %s", TypeName(top))
	}
	if err := m.Spend(len(items)); err != nil {
		return err
	}
	l.Items = append(l.Items, items...)
	return nil
}

func (m *Machine) setItems(many bool) error {
	items, top, err := m.popItems(many, 2)
	if err != nil {
		return err
	}
	d, ok := top.(*Dict)
	if !ok {
		return fmt.Errorf("SETITEM on %s", TypeName(top))
	}
	return m.setDictItems(d, items)
}

// popItems pops what APPEND(S) and SETITEM(S) add: everything above the
// last MARK, or the top n objects; it returns them and the container below.
func (m *Machine) popItems(many bool, n int) ([]any, any, error) {
	var items []any
	var err error
	if many {
		items, err = m.popMark()
	} else {
		items, err = m.popN(n)
	}
	if err != nil {
		return nil, nil, err
	}
	top, err := m.top()
	return items, top, err
}

// setDictItems stores key, value pairs in d, paying twice per item: an
// entry costs a slot in Keys or Values and one in the name index.
func (m *Machine) setDictItems(d *Dict, kv []any) error {
	if err := m.Spend(2 * len(kv)); err != nil {
		return err
	}
	return d.setItems(kv)
}

// setItems stores key, value pairs; a repeated key keeps its first place
// and takes the last value, as a Python dict does.
func (d *Dict) setItems(kv []any) error {
	if len(kv)%2 != 0 {
		return errors.New("odd number of dict items")
	}
	for i := 0; i < len(kv); i += 2 {
		if _, ok := kv[i].(*List); ok {
			return errors.New("unhashable dict key")
		}
		// Only string keys are looked up; others are kept as they come.
		name, isName := kv[i].(string)
		if j, ok := d.byName[name]; isName && ok {
			d.Values[j] = kv[i+1]
			continue
		}
		if isName {
			if d.byName == nil {
				d.byName = map[string]int{}
			}
			d.byName[name] = len(d.Keys)
		}
		d.Keys = append(d.Keys, kv[i])
		d.Values = append(d.Values, kv[i+1])
	}
	return nil
}

// Get looks up a string key.
func (d *Dict) Get(name string) (any, bool) {
	i, ok := d.byName[name]
	if !ok {
		return nil, false
	}
	return d.Values[i], true
}

// storage interprets a persistent id ('storage', class, key, location, numel).
func (m *Machine) storage(pid any) (*TorchStorage, error) {
	t, ok := pid.(Tuple)
	if !ok || len(t) != 5 || t[0] != "storage" {
		return nil, fmt.Errorf("persistent id is %s, not a storage", TypeName(pid))
	}
	class, ok1 := t[1].(Global)
	key, ok2 := t[2].(string)
	numel, ok3 := t[4].(int64)
	if !ok1 || !ok2 || !ok3 || numel < 0 {
		return nil, errors.New("malformed storage persistent id")
	}
	if s, ok := m.storages[key]; ok {
		return s, nil
	}
	s := &TorchStorage{Key: key}
	if class.Module+"."+class.Name == untypedStorage {
		s.Bytes = numel
	} else {
		dtype, ok := typedStorages[class.Name]
		if !ok || class.Module != "torch" {
			return nil, fmt.Errorf("%s.%s is not a storage class", class.Module, class.Name)
		}
		size := torchDTypes[dtype].Size
		if numel > math.MaxInt64/size {
			return nil, errors.New("storage size overflows")
		}
		s.DType, s.Bytes = dtype, numel*size
	}
	m.storages[key] = s
	m.order = append(m.order, s)
	return s, nil
}

func (m *Machine) reduce() error {
	items, err := m.popN(2)
	if err != nil {
		return err
	}
	g, ok := items[0].(Global)
	args, ok2 := items[1].(Tuple)
	if !ok || !ok2 {
		return fmt.Errorf("REDUCE of %s", TypeName(items[0]))
	}
	call, ok := callables[g.Module+"."+g.Name]
	if !ok && m.extra != nil {
		call, ok = m.extra.Callables[g.Module+"."+g.Name]
	}
	if !ok {
		return fmt.Errorf("call of %s.%s refused", g.Module, g.Name)
	}
	v, err := call(m, args)
	if err != nil {
		return fmt.Errorf("%s.%s: %w", g.Module, g.Name, err)
	}
	m.push(v)
	return nil
}

// newObject interprets NEWOBJ: cls.__new__(cls, *args) of a class the
// extra rules admit, with no arguments, as dataclasses pickle.
func (m *Machine) newObject() error {
	items, err := m.popN(2)
	if err != nil {
		return err
	}
	g, ok := items[0].(Global)
	args, ok2 := items[1].(Tuple)
	if !ok || !ok2 || m.extra == nil || !m.extra.Classes[g.Module+"."+g.Name] {
		return fmt.Errorf("NEWOBJ of %s refused", TypeName(items[0]))
	}
	if len(args) != 0 {
		return fmt.Errorf("NEWOBJ of %s.%s with arguments refused", g.Module, g.Name)
	}
	m.push(&Object{Class: g.Module + "." + g.Name})
	return nil
}

// build applies BUILD state. A dict's attributes (a state dict's
// _metadata) and a tensor's are ignored; an object of the extra rules
// takes its state once.
func (m *Machine) build() error {
	state, err := m.pop()
	if err != nil {
		return err
	}
	top, err := m.top()
	if err != nil {
		return err
	}
	switch o := top.(type) {
	case *Dict, *TorchTensor:
		return nil
	case *Object:
		if o.State != nil {
			return fmt.Errorf("second BUILD on %s refused", o.Class)
		}
		o.State = state
		return nil
	}
	return fmt.Errorf("BUILD on %s refused", TypeName(top))
}

func newOrderedDict(m *Machine, args Tuple) (any, error) {
	d := &Dict{}
	if len(args) == 0 {
		return d, nil
	}
	l, ok := args[0].(*List)
	if len(args) != 1 || !ok {
		return nil, errors.New("expects no arguments or a list of pairs")
	}
	for _, item := range l.Items { // the list may be memoized and used again: each pair is paid for
		pair, ok := item.(Tuple)
		if !ok || len(pair) != 2 {
			return nil, errors.New("list item is not a pair")
		}
		if err := m.setDictItems(d, pair); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// rebuildTensor interprets _rebuild_tensor_v2(storage, offset, size, stride,
// requires_grad, hooks[, metadata]) and _rebuild_tensor_v3(..., hooks,
// dtype[, metadata]).
func rebuildTensor(m *Machine, args Tuple) (any, error) {
	if len(args) < 6 {
		return nil, fmt.Errorf("%d arguments, need at least 6", len(args))
	}
	for _, a := range args[2:4] {
		if err := m.SpendCopy(a); err != nil {
			return nil, err
		}
	}
	s, ok := args[0].(*TorchStorage)
	offset, ok2 := args[1].(int64)
	if !ok || !ok2 || offset < 0 {
		return nil, errors.New("malformed storage or offset")
	}
	shape, err := Ints(args[2])
	if err != nil {
		return nil, fmt.Errorf("size: %w", err)
	}
	stride, err := Ints(args[3])
	if err != nil {
		return nil, fmt.Errorf("stride: %w", err)
	}
	if len(shape) != len(stride) {
		return nil, fmt.Errorf("size %v and stride %v differ in rank", shape, stride)
	}
	t := &TorchTensor{Storage: s, DType: s.DType, Offset: offset, Shape: shape, Stride: stride}
	if len(args) >= 7 {
		if g, ok := args[6].(Global); ok { // v3's dtype
			if _, known := torchDTypes[g.Name]; !known || g.Module != "torch" {
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
func rebuildParameter(_ *Machine, args Tuple) (any, error) {
	if len(args) < 1 {
		return nil, errors.New("no data argument")
	}
	t, ok := args[0].(*TorchTensor)
	if !ok {
		return nil, fmt.Errorf("data is %s, not a tensor", TypeName(args[0]))
	}
	return t, nil
}

// Ints reads a tuple of non-negative integers (a shape, a stride).
func Ints(v any) ([]int64, error) {
	t, ok := v.(Tuple)
	if !ok {
		return nil, fmt.Errorf("%s, not a tuple", TypeName(v))
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, fmt.Errorf("item %d is not a non-negative integer", i)
		}
		out[i] = n
	}
	return out, nil
}

// TypeName names a value's Python type with its article, for messages
// that must not print the value: it may nest a million levels deep.
func TypeName(v any) string {
	switch v.(type) {
	case nil:
		return "None"
	case bool:
		return "a bool"
	case int64:
		return "an int"
	case float64:
		return "a float"
	case string:
		return "a str"
	case []byte:
		return "bytes"
	case Tuple:
		return "a tuple"
	case *List:
		return "a list"
	case *Dict:
		return "a dict"
	case Global:
		return "a global"
	case *TorchStorage:
		return "a storage"
	case *TorchTensor:
		return "a tensor"
	case *Object:
		return "a " + v.(*Object).Class
	}
	return fmt.Sprintf("a %T", v)
}
