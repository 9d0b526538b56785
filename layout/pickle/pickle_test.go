package pickle

import (
	"errors"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/layout/layouttest"
)

func TestParseData(t *testing.T) {
	// {"a": [1, -2, 3.5, None, True, b"x", (7,)], 5: "five"} as protocol 2.
	root, _, err := Parse([]byte("\x80\x02}q\x00(X\x01\x00\x00\x00a]q\x01(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00N\x88C\x01xK\x07\x85eK\x05X\x04\x00\x00\x00fiveu."), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := root.(*Dict)
	if len(d.Keys) != 2 || d.Keys[0] != "a" || d.Keys[1] != int64(5) || d.Values[1] != "five" {
		t.Fatalf("dict %#v", d)
	}
	l := d.Values[0].(*List).Items
	if len(l) != 7 || l[0] != int64(1) || l[1] != int64(-2) || l[2] != 3.5 || l[3] != nil || l[4] != true {
		t.Fatalf("list %#v", l)
	}
}

// made is a value a callable makes; testRules' IgnoresState says whether
// BUILD on it is ignored.
type made struct{ dropsState bool }

func (*made) TypeName() string { return "a made" }

// testRules admit a class m.C, a callable m.f (its argument plus one), a
// name m.n, a callable m.v making a made value that ignores BUILD state
// and m.w one that does not, and persistent ids, read as "id:" and the id.
func testRules() *Rules {
	return &Rules{
		Names:   map[string]bool{"m.n": true},
		Classes: map[string]bool{"m.C": true},
		Callables: map[string]Callable{
			"m.f": func(m *Machine, args Tuple) (any, error) {
				n, ok := args[0].(int64)
				if !ok {
					return nil, errors.New("not an int")
				}
				return n + 1, nil
			},
			"m.v": func(*Machine, Tuple) (any, error) { return &made{dropsState: true}, nil },
			"m.w": func(*Machine, Tuple) (any, error) { return &made{}, nil },
		},
		PersistentLoad: func(pid any) (any, error) {
			s, ok := pid.(string)
			if !ok {
				return nil, errors.New("not a str")
			}
			return "id:" + s, nil
		},
		IgnoresState: func(v any) bool {
			x, ok := v.(*made)
			return ok && x.dropsState
		},
	}
}

// Pickles that use each kind of global testRules admit.
const (
	objectPickle     = "\x80\x02cm\nC\n)\x81}(X\x01\x00\x00\x00aK\x01ub."
	callPickle       = "\x80\x02cm\nf\nK\x01\x85R."
	namePickle       = "\x80\x02cm\nn\n."
	persistentPickle = "\x80\x02X\x01\x00\x00\x00kQ."
)

// Rules admit what they name and nothing else: a class NEWOBJ makes and
// BUILD gives state once, a callable REDUCE calls, a name that may appear
// but not be called, persistent ids, BUILD on a value they say ignores
// it; without them each is refused, by name.
func TestRules(t *testing.T) {
	root, _, err := Parse([]byte(objectPickle), testRules())
	o, ok := root.(*Object)
	if err != nil || !ok || o.Class != "m.C" || TypeName(o) != "a m.C" {
		t.Fatalf("object: %#v, %v", root, err)
	}
	if v, ok := o.State.(*Dict).Get("a"); !ok || v != int64(1) {
		t.Fatalf("object state %#v", o.State)
	}
	if root, _, err := Parse([]byte(callPickle), testRules()); err != nil || root != int64(2) {
		t.Fatalf("call: %#v, %v", root, err)
	}
	if root, _, err := Parse([]byte(namePickle), testRules()); err != nil || root != (Global{"m", "n"}) {
		t.Fatalf("name: %#v, %v", root, err)
	}
	if root, _, err := Parse([]byte(persistentPickle), testRules()); err != nil || root != "id:k" {
		t.Fatalf("persistent id: %#v, %v", root, err)
	}
	if _, _, err := Parse([]byte("\x80\x02cm\nv\n)R}b."), testRules()); err != nil {
		t.Fatalf("BUILD on a value that ignores it: %v", err)
	}
	for _, tc := range []struct {
		pickle string
		rules  *Rules
		want   string
	}{
		{objectPickle, nil, "global m.C refused"},
		{callPickle, nil, "global m.f refused"},
		{namePickle, nil, "global m.n refused"},
		{persistentPickle, nil, "persistent id refused"},
		{"\x80\x02cm\nC\n)\x81}b}b.", testRules(), "second BUILD on m.C refused"},
		{"\x80\x02cm\nC\nK\x01\x85\x81.", testRules(), "NEWOBJ of m.C with arguments refused"},
		{"\x80\x02cm\nn\n)R.", testRules(), "call of m.n refused"},
		{"\x80\x02cm\nw\n)R}b.", testRules(), "BUILD on a made refused"},
		{"\x80\x02cm\nf\nN\x85R.", testRules(), "m.f: not an int"},
		{"\x80\x02N\x85Q.", testRules(), "not a str"},
		{"\x80\x02cos\nsystem\n.", testRules(), "global os.system refused"},
		{strings.Repeat("N0", 10) + "N.", &Rules{Work: 10}, "more than 10 objects built"},
	} {
		if _, _, err := Parse([]byte(tc.pickle), tc.rules); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.pickle, err, tc.want)
		}
	}
}

// FuzzParse reads any input under testRules, hostile pickles and a
// pickle of each kind of global among the seeds, within a memory budget
// of 64 bytes an input byte and 64 a unit of work.
func FuzzParse(f *testing.F) {
	for _, p := range layouttest.HostilePickles() {
		f.Add(p)
	}
	for _, p := range []string{objectPickle, callPickle, namePickle, persistentPickle} {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		layouttest.WithinBudget(t, len(data), 64*uint64(len(data))+64*MaxWork, func() { Parse(data, testRules()) })
	})
}
