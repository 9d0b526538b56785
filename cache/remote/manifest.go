package remote

import (
	"encoding/json"
	"fmt"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Format names the layout of checkpoint manifest objects.
const Format = "ckptfs-checkpoint/1"

// MaxManifestSize bounds the manifest objects read from a bucket.
const MaxManifestSize = 256 << 20

// Parse reads and validates a manifest object of checkpoint name, read
// from r.
func Parse(r *Remote, name string, js []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(js, &m); err != nil || m.Format != Format {
		return nil, fmt.Errorf("manifest of %s in %s is not a %s manifest: %v: %w", name, r, Format, err, chunk.ErrCorrupt)
	}
	if err := m.Validate(name); err != nil {
		return nil, fmt.Errorf("manifest of %s in %s refused: %w: %w", name, r, err, chunk.ErrCorrupt)
	}
	return &m, nil
}

// The bucket manifest's wire form. Every field has its JSON name written
// out, so that renaming a Go field never changes what buckets hold; the
// names are those format 1 has always used (TestManifestWireFormat).

// Manifest is a checkpoint as published in a bucket: its entries
// in walk order (folders before what they hold), the checkpoint itself first
// with path "".
type Manifest struct {
	Format  string  `json:"format"`
	Name    string  `json:"name"`
	Entries []Entry `json:"entries"`
}

// Entry is one file, folder or symlink of a checkpoint.
type Entry struct {
	Path    string  `json:"path"`
	Ino     uint64  `json:"Ino"` // always 0: inode numbers are local
	Mode    uint32  `json:"Mode"`
	Uid     uint32  `json:"Uid"`
	Gid     uint32  `json:"Gid"`
	Atime   int64   `json:"Atime"`
	Mtime   int64   `json:"Mtime"`
	Ctime   int64   `json:"Ctime"`
	Target  string  `json:"Target"`
	Content Content `json:"Content"`
}

type Content struct {
	Size   int64      `json:"Size"`
	Kind   meta.Kind  `json:"Kind"`
	Chunks []ChunkRef `json:"Chunks"`
}

type ChunkRef struct {
	Hash chunk.Hash `json:"Hash"` // hex
	Len  uint32     `json:"Len"`
}

// EntryOf is the wire form of the record of path.
func EntryOf(path string, in *meta.Inode) Entry {
	e := Entry{Path: path, Mode: in.Mode, Uid: in.Uid, Gid: in.Gid, Atime: in.Atime, Mtime: in.Mtime, Ctime: in.Ctime,
		Target: in.Target, Content: Content{Size: in.Content.Size, Kind: in.Content.Kind,
			Chunks: make([]ChunkRef, 0, len(in.Content.Chunks))}} // [] even when empty, as always
	for _, c := range in.Content.Chunks {
		e.Content.Chunks = append(e.Content.Chunks, ChunkRef(c))
	}
	return e
}

// Inode is the record an entry describes, with no inode number yet.
func (e *Entry) Inode() meta.Inode {
	in := meta.Inode{Mode: e.Mode, Uid: e.Uid, Gid: e.Gid, Atime: e.Atime, Mtime: e.Mtime, Ctime: e.Ctime,
		Target: e.Target, Content: meta.Content{Size: e.Content.Size, Kind: e.Content.Kind}}
	for _, c := range e.Content.Chunks {
		in.Content.Chunks = append(in.Content.Chunks, chunk.Ref(c))
	}
	return in
}
