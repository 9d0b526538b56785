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
)

// MaxSize bounds the pickle Parse reads, as large as the data.pkl a
// torch.save archive may have: a state dict's pickle holds names and
// shapes, about 200 bytes a tensor.
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

// Parse reads a pickle of at most MaxSize bytes without executing it,
// with the globals rules admit (nil admits only collections.OrderedDict),
// and returns the object it leaves. It knows the opcodes of pickle
// protocols 2 to 5 that build plain data; anything else (os.system, an
// arbitrary class) is refused with an error naming it. The machine it
// returns holds what is left of the work budget, to pay for walking the
// result.
func Parse(data []byte, rules *Rules) (any, *Machine, error) {
	if len(data) > MaxSize {
		return nil, nil, fmt.Errorf("pickle: %d bytes exceeds %d", len(data), MaxSize)
	}
	if rules == nil {
		rules = &Rules{}
	}
	m := &Machine{data: data, memo: map[uint64]any{}, work: rules.Work, rules: rules}
	if m.work == 0 {
		m.work = MaxWork
	}
	m.limit = m.work
	root, err := m.run()
	if err != nil {
		return nil, nil, fmt.Errorf("pickle: at byte %d: %w", m.pos, err)
	}
	return root, m, nil
}

// Rules are what a kind of pickle may use besides plain data, as Python's
// Unpickler.find_class and persistent_load decide: globals by full name
// ("torch.float32"), each interpreted here as data, never looked up or
// run.
type Rules struct {
	// Work is the work budget of one pickle; MaxWork when zero.
	Work int
	// Names are the globals that may appear as values but not be called
	// (a dtype, a storage class).
	Names map[string]bool
	// Callables are the globals REDUCE may call, besides
	// collections.OrderedDict.
	Callables map[string]Callable
	// Classes are the classes NEWOBJ may instantiate, with no arguments,
	// as dataclasses pickle: an *Object that BUILD gives its state once.
	Classes map[string]bool
	// PersistentLoad interprets a persistent id (BINPERSID); nil refuses
	// them.
	PersistentLoad func(pid any) (any, error)
	// IgnoresState reports whether BUILD on v, a value the rules made,
	// is ignored (a tensor's hooks and metadata); nil, or false, refuses
	// BUILD on it.
	IgnoresState func(v any) bool
}

// A Callable interprets a call of a global the rules admit, as data,
// paying m for what it builds.
type Callable func(m *Machine, args Tuple) (any, error)

// builtins are the callables every pickle may use: plain data.
var builtins = map[string]Callable{
	"collections.OrderedDict": newOrderedDict,
}

// Object is an instance of a class the rules admit: its class and the
// state BUILD gave it (a dict or a tuple), never run.
type Object struct {
	Class string
	State any
}

// Machine is the state of one pickle being read, handed to the callables
// the rules admit so that they pay for what they build.
type Machine struct {
	data  []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint64]any
	work  int // left of limit
	limit int // the rules' work budget
	rules *Rules
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
	if !m.rules.admits(module + "." + name) {
		return fmt.Errorf("global %s.%s refused: only state dicts of tensors are read", module, name)
	}
	m.push(Global{module, name})
	return nil
}

// admits reports whether r names global full, or it is a builtin.
func (r *Rules) admits(full string) bool {
	_, builtin := builtins[full]
	_, call := r.Callables[full]
	return builtin || call || r.Names[full] || r.Classes[full]
}

// callable returns the callable global full names.
func (r *Rules) callable(full string) (Callable, bool) {
	if call, ok := builtins[full]; ok {
		return call, true
	}
	call, ok := r.Callables[full]
	return call, ok
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
				err = m.persistentLoad(pid)
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

// persistentLoad pushes what the rules make of a persistent id.
func (m *Machine) persistentLoad(pid any) error {
	if m.rules.PersistentLoad == nil {
		return errors.New("persistent id refused")
	}
	v, err := m.rules.PersistentLoad(pid)
	if err != nil {
		return err
	}
	m.push(v)
	return nil
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
	call, ok := m.rules.callable(g.Module + "." + g.Name)
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
// rules admit, with no arguments, as dataclasses pickle.
func (m *Machine) newObject() error {
	items, err := m.popN(2)
	if err != nil {
		return err
	}
	g, ok := items[0].(Global)
	args, ok2 := items[1].(Tuple)
	if !ok || !ok2 || !m.rules.Classes[g.Module+"."+g.Name] {
		return fmt.Errorf("NEWOBJ of %s refused", TypeName(items[0]))
	}
	if len(args) != 0 {
		return fmt.Errorf("NEWOBJ of %s.%s with arguments refused", g.Module, g.Name)
	}
	m.push(&Object{Class: g.Module + "." + g.Name})
	return nil
}

// build applies BUILD state. A dict's attributes (a state dict's
// _metadata) and those of a value the rules say ignores them (a tensor's)
// are ignored; an object of a class the rules admit takes its state once.
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
	case *Dict:
		return nil
	case *Object:
		if o.State != nil {
			return fmt.Errorf("second BUILD on %s refused", o.Class)
		}
		o.State = state
		return nil
	}
	if m.rules.IgnoresState != nil && m.rules.IgnoresState(top) {
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
// that must not print the value: it may nest a million levels deep. A
// value the rules made names itself with a TypeName method.
func TypeName(v any) string {
	switch v := v.(type) {
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
	case *Object:
		return "a " + v.Class
	case interface{ TypeName() string }:
		return v.TypeName()
	}
	return fmt.Sprintf("a %T", v)
}
