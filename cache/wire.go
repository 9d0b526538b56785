package cache

import (
	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// The bucket manifest's wire form. Every field has its JSON name written
// out, so that renaming a Go field never changes what buckets hold; the
// names are those format 1 has always used (TestManifestWireFormat).

// checkpointManifest is a checkpoint as published in a bucket: its entries
// in walk order (folders before what they hold), the checkpoint itself first
// with path "".
type checkpointManifest struct {
	Format  string          `json:"format"`
	Name    string          `json:"name"`
	Entries []manifestEntry `json:"entries"`
}

// manifestEntry is one file, folder or symlink of a checkpoint.
type manifestEntry struct {
	Path    string      `json:"path"`
	Ino     uint64      `json:"Ino"` // always 0: inode numbers are local
	Mode    uint32      `json:"Mode"`
	Uid     uint32      `json:"Uid"`
	Gid     uint32      `json:"Gid"`
	Atime   int64       `json:"Atime"`
	Mtime   int64       `json:"Mtime"`
	Ctime   int64       `json:"Ctime"`
	Target  string      `json:"Target"`
	Content wireContent `json:"Content"`
}

type wireContent struct {
	Size   int64       `json:"Size"`
	Kind   meta.Kind   `json:"Kind"`
	Chunks []wireChunk `json:"Chunks"`
}

type wireChunk struct {
	Hash chunk.Hash `json:"Hash"` // hex
	Len  uint32     `json:"Len"`
}

// entryOf is the wire form of the record of path.
func entryOf(path string, in *meta.Inode) manifestEntry {
	e := manifestEntry{Path: path, Mode: in.Mode, Uid: in.Uid, Gid: in.Gid, Atime: in.Atime, Mtime: in.Mtime, Ctime: in.Ctime,
		Target: in.Target, Content: wireContent{Size: in.Content.Size, Kind: in.Content.Kind,
			Chunks: make([]wireChunk, 0, len(in.Content.Chunks))}} // [] even when empty, as always
	for _, c := range in.Content.Chunks {
		e.Content.Chunks = append(e.Content.Chunks, wireChunk(c))
	}
	return e
}

// inode is the record an entry describes, with no inode number yet.
func (e *manifestEntry) inode() meta.Inode {
	in := meta.Inode{Mode: e.Mode, Uid: e.Uid, Gid: e.Gid, Atime: e.Atime, Mtime: e.Mtime, Ctime: e.Ctime,
		Target: e.Target, Content: meta.Content{Size: e.Content.Size, Kind: e.Content.Kind}}
	for _, c := range e.Content.Chunks {
		in.Content.Chunks = append(in.Content.Chunks, chunk.Ref(c))
	}
	return in
}
