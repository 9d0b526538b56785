package remote

import (
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

func TestManifestValidation(t *testing.T) {
	file := func(p string, lens ...uint32) Entry {
		e := Entry{Path: p, Mode: syscall.S_IFREG | 0o644}
		for _, n := range lens {
			e.Content.Chunks = append(e.Content.Chunks, ChunkRef{Len: n})
			e.Content.Size += int64(n)
		}
		return e
	}
	dir := func(p string) Entry {
		return Entry{Path: p, Mode: syscall.S_IFDIR | 0o755}
	}
	good := func() []Entry { return []Entry{dir(""), dir("sub"), file("sub/w.safetensors", 10, 20)} }
	for _, tc := range []struct {
		name string
		edit func(es []Entry) []Entry
		want string // "" when it is accepted
	}{
		{"as published", func(es []Entry) []Entry { return es }, ""},
		{"dot-dot", func(es []Entry) []Entry { return append(es, file("sub/../../x", 1)) }, "plain"},
		{"absolute", func(es []Entry) []Entry { return append(es, file("/etc/x", 1)) }, "plain"},
		{"dot", func(es []Entry) []Entry { return append(es, file("sub/.", 1)) }, "plain"},
		{"256-byte name", func(es []Entry) []Entry { return append(es, file(strings.Repeat("n", 256), 1)) }, "256 bytes"},
		{"NUL in a name", func(es []Entry) []Entry { return append(es, file("a\x00b", 1)) }, "NUL"},
		{"twice", func(es []Entry) []Entry { return append(es, file("sub/w.safetensors")) }, "twice"},
		{"below a file", func(es []Entry) []Entry { return append(es, file("sub/w.safetensors/x", 1)) }, "earlier folder"},
		{"a FIFO", func(es []Entry) []Entry {
			e := file("fifo")
			e.Mode = syscall.S_IFIFO | 0o644
			return append(es, e)
		}, "not a file"},
		{"size not the chunks' sum", func(es []Entry) []Entry { es[2].Content.Size++; return es }, "add to"},
		{"a chunk over chunk.MaxSize", func(es []Entry) []Entry { return append(es, file("big", chunk.MaxSize+1)) }, "chunk"},
		{"an empty chunk", func(es []Entry) []Entry { return append(es, file("e", 0)) }, "chunk"},
		{"a folder with chunks", func(es []Entry) []Entry {
			es[1].Content = file("", 5).Content
			return es
		}, "folder with content"},
		{"a symlink with no target", func(es []Entry) []Entry {
			return append(es, Entry{Path: "l", Mode: syscall.S_IFLNK | 0o777})
		}, "symlink target"},
		{"a root that is not first", func(es []Entry) []Entry { return es[1:] }, "first entry"},
	} {
		m := &Manifest{Format: Format, Name: "ck", Entries: tc.edit(good())}
		err := m.Validate("ck")
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	m := &Manifest{Format: Format, Name: "other", Entries: good()}
	if err := m.Validate("ck"); err == nil {
		t.Error("a manifest of another checkpoint accepted")
	}
	setuid := good()
	setuid[2].Mode |= syscall.S_ISUID | syscall.S_ISGID
	m = &Manifest{Format: Format, Name: "ck", Entries: setuid}
	if err := m.Validate("ck"); err != nil || m.Entries[2].Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
		t.Errorf("set-id bits: %v, mode %#o", err, m.Entries[2].Mode)
	}
}
