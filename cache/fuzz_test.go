package cache

import (
	"bytes"
	"reflect"
	"syscall"
	"testing"
)

func FuzzDecodeInode(f *testing.F) {
	f.Add(encodeInode(&Inode{Mode: 0o100644, Uid: 1, Mtime: 5, Target: "x",
		Content: Content{Size: 3, Kind: KindSafetensors, Chunks: []ChunkRef{{Hash: Hash{1}, Len: 3}}}}))
	f.Add([]byte{inodeVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := decodeInode(9, b)
		if err != nil {
			return
		}
		again, err := decodeInode(9, encodeInode(in))
		if err != nil || !reflect.DeepEqual(in, again) {
			t.Fatalf("re-encoded record differs: %v", err)
		}
	})
}

func FuzzChunkRoundTrip(f *testing.F) {
	f.Add([]byte("hello hello hello hello"), "")
	f.Add(make([]byte, 1000), "BF16")
	f.Add([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef!"), "F32")
	f.Add([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"), "F16")
	c := newCodecs()
	f.Fuzz(func(t *testing.T, raw []byte, hint string) {
		v := c.encodeChunk(raw, Hint(hint))
		h := hashOf(raw)
		got, err := c.decodeChunk(h, v)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("round trip: %v", err)
		}
		if len(v) > chunkHeaderLen {
			v[len(v)-1] ^= 1
			if _, err := c.decodeChunk(h, v); err == nil {
				t.Fatal("corrupted payload accepted")
			}
		}
	})
}

// FuzzParseManifest feeds manifest objects, as a bucket might hold them,
// to the parser: what it accepts is safe to build a tree from.
func FuzzParseManifest(f *testing.F) {
	h := hashOf([]byte("x"))
	f.Add([]byte(`{"format":"ckptfs-checkpoint/1","name":"ck","entries":[{"path":"","Mode":16877},` +
		`{"path":"a","Mode":33188,"Content":{"Size":1,"Chunks":[{"Hash":"` + h.String() + `","Len":1}]}},` +
		`{"path":"l","Mode":41471,"Target":"a"}]}`))
	f.Add([]byte(`{"format":"ckptfs-checkpoint/1","name":"ck","entries":[{"path":"","Mode":16877},{"path":"../x","Mode":33188}]}`))
	f.Fuzz(func(t *testing.T, js []byte) {
		m, err := parseManifest(&Remote{url: "s3://fuzz"}, "ck", js)
		if err != nil {
			return
		}
		for i, e := range m.Entries {
			if i > 0 && plainPath(e.Path) != nil {
				t.Fatalf("accepted path %q", e.Path)
			}
			if e.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
				t.Fatalf("kept set-id bits %#o", e.Mode)
			}
			var sum int64
			for _, c := range e.Content.Chunks {
				sum += int64(c.Len)
			}
			if sum != e.Content.Size {
				t.Fatalf("%q: chunks %d, size %d", e.Path, sum, e.Content.Size)
			}
		}
	})
}
