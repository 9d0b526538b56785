package cache

import (
	"bytes"
	"reflect"
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
