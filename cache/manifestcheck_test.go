package cache

import (
	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/layout/layouttest"
	"strings"
	"syscall"
	"testing"
)

func TestManifestValidation(t *testing.T) {
	file := func(p string, lens ...uint32) manifestEntry {
		e := manifestEntry{Path: p, Mode: syscall.S_IFREG | 0o644}
		for _, n := range lens {
			e.Content.Chunks = append(e.Content.Chunks, wireChunk{Len: n})
			e.Content.Size += int64(n)
		}
		return e
	}
	dir := func(p string) manifestEntry {
		return manifestEntry{Path: p, Mode: syscall.S_IFDIR | 0o755}
	}
	good := func() []manifestEntry { return []manifestEntry{dir(""), dir("sub"), file("sub/w.safetensors", 10, 20)} }
	for _, tc := range []struct {
		name string
		edit func(es []manifestEntry) []manifestEntry
		want string // "" when it is accepted
	}{
		{"as published", func(es []manifestEntry) []manifestEntry { return es }, ""},
		{"dot-dot", func(es []manifestEntry) []manifestEntry { return append(es, file("sub/../../x", 1)) }, "plain"},
		{"absolute", func(es []manifestEntry) []manifestEntry { return append(es, file("/etc/x", 1)) }, "plain"},
		{"dot", func(es []manifestEntry) []manifestEntry { return append(es, file("sub/.", 1)) }, "plain"},
		{"256-byte name", func(es []manifestEntry) []manifestEntry { return append(es, file(strings.Repeat("n", 256), 1)) }, "256 bytes"},
		{"NUL in a name", func(es []manifestEntry) []manifestEntry { return append(es, file("a\x00b", 1)) }, "NUL"},
		{"twice", func(es []manifestEntry) []manifestEntry { return append(es, file("sub/w.safetensors")) }, "twice"},
		{"below a file", func(es []manifestEntry) []manifestEntry { return append(es, file("sub/w.safetensors/x", 1)) }, "earlier folder"},
		{"a FIFO", func(es []manifestEntry) []manifestEntry {
			e := file("fifo")
			e.Mode = syscall.S_IFIFO | 0o644
			return append(es, e)
		}, "not a file"},
		{"size not the chunks' sum", func(es []manifestEntry) []manifestEntry { es[2].Content.Size++; return es }, "add to"},
		{"a chunk over chunk.MaxSize", func(es []manifestEntry) []manifestEntry { return append(es, file("big", chunk.MaxSize+1)) }, "chunk"},
		{"an empty chunk", func(es []manifestEntry) []manifestEntry { return append(es, file("e", 0)) }, "chunk"},
		{"a folder with chunks", func(es []manifestEntry) []manifestEntry {
			es[1].Content = file("", 5).Content
			return es
		}, "folder with content"},
		{"a symlink with no target", func(es []manifestEntry) []manifestEntry {
			return append(es, manifestEntry{Path: "l", Mode: syscall.S_IFLNK | 0o777})
		}, "symlink target"},
		{"a root that is not first", func(es []manifestEntry) []manifestEntry { return es[1:] }, "first entry"},
	} {
		m := &checkpointManifest{Format: manifestFormat, Name: "ck", Entries: tc.edit(good())}
		err := m.validate("ck")
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	m := &checkpointManifest{Format: manifestFormat, Name: "other", Entries: good()}
	if err := m.validate("ck"); err == nil {
		t.Error("a manifest of another checkpoint accepted")
	}
	setuid := good()
	setuid[2].Mode |= syscall.S_ISUID | syscall.S_ISGID
	m = &checkpointManifest{Format: manifestFormat, Name: "ck", Entries: setuid}
	if err := m.validate("ck"); err != nil || m.Entries[2].Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
		t.Errorf("set-id bits: %v, mode %#o", err, m.Entries[2].Mode)
	}
}

// Importing a manifest marks as held by the bucket only the chunks this
// store lacks; a chunk it wrote itself stays to be uploaded, and a chunk
// stored after the import clears the mark, so no manifest can make
// eviction drop this store's only copy.
func TestImportMarksOnlyChunksTheStoreLacks(t *testing.T) {
	s := openTemp(t)
	mine, err := s.PutChunk(layouttest.Random(20, 1000), "")
	if err != nil {
		t.Fatal(err)
	}
	later := layouttest.Random(21, 1000)
	absent := chunk.Ref{Hash: chunk.Sum([]byte("never stored here")), Len: 17}
	if err := s.markBucketOnly([]chunk.Hash{mine.Hash, chunk.Sum(later), absent.Hash}); err != nil {
		t.Fatal(err)
	}
	if s.uploaded(mine.Hash) {
		t.Error("a chunk this store holds, not uploaded, was marked as in the bucket")
	}
	if !s.uploaded(absent.Hash) {
		t.Error("a chunk only the bucket holds was not marked")
	}
	ref, err := s.PutChunk(later, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.uploaded(ref.Hash) {
		t.Error("a chunk stored after the import kept the import's mark")
	}
}
