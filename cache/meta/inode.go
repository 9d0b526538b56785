package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// Kind says how a file's content was split at ingest.
type Kind byte

const (
	KindOpaque      Kind = 0 // content-defined chunks
	KindSafetensors Kind = 1 // header chunk, then tensor-aligned chunks
	KindZip         Kind = 2 // torch.save zip: storage-record-aligned chunks
)

// Content is a file manifest: its length and chunk list. It never changes
// once built; a rewrite produces a new Content.
type Content struct {
	Size   int64
	Kind   Kind
	Chunks []chunk.Ref
	// Staged, when not 0, says the bytes are not chunked yet: they are the
	// whole of staged file Staged, written behind (see cache/settle.go),
	// and Chunks is empty.
	Staged uint64
}

// Equal reports whether c and d hold the same bytes the same way.
func (c *Content) Equal(d *Content) bool {
	return c.Size == d.Size && c.Kind == d.Kind && c.Staged == d.Staged && slices.Equal(c.Chunks, d.Chunks)
}

// Inode is the stored record of a file, directory, symlink, FIFO, socket
// or device node (the last three are metadata only).
type Inode struct {
	Ino                 uint64
	Mode                uint32 // type bits and permissions, as in stat(2)
	Uid, Gid            uint32
	Atime, Mtime, Ctime int64 // Unix nanoseconds
	Target              string
	Content             Content
	// Nlink counts the directory entries of a non-directory (hard links);
	// 0 in a record means 1.
	Nlink uint32
	Rdev  uint32 // a device node's device number
	// Xattrs are the extended attributes of the user namespace, by name
	// with its "user." prefix.
	Xattrs map[string][]byte
}

// Links is how many directory entries a non-directory has.
func (in *Inode) Links() uint32 { return max(in.Nlink, 1) }

// Bounds of the extended attributes of one inode, as Linux's own
// (XATTR_NAME_MAX, XATTR_SIZE_MAX): a record stays small, whatever a user
// sets.
const (
	MaxXattrName = 255
	MaxXattrSize = 64 << 10 // one value, and all names and values together
)

// XattrBytes is the size of in's extended attributes, names and values.
func (in *Inode) XattrBytes() int {
	n := 0
	for k, v := range in.Xattrs {
		n += len(k) + len(v)
	}
	return n
}

// Record versions: 1 has no links, device or attributes, and is still
// written for records without them; 2 appends them; 3 appends to 2 the
// staged file and length of content not chunked yet, and is written only
// then.
const (
	inodeVersion1 = 1
	inodeVersion2 = 2
	inodeVersion3 = 3
)

// EncodeInode serializes an inode record (the ino is the key).
func EncodeInode(in *Inode) []byte {
	version := byte(inodeVersion1)
	switch {
	case in.Content.Staged != 0:
		version = inodeVersion3
	case in.Nlink > 1 || in.Rdev != 0 || len(in.Xattrs) > 0:
		version = inodeVersion2
	}
	b := []byte{version}
	b = binary.AppendUvarint(b, uint64(in.Mode))
	b = binary.AppendUvarint(b, uint64(in.Uid))
	b = binary.AppendUvarint(b, uint64(in.Gid))
	b = binary.AppendVarint(b, in.Atime)
	b = binary.AppendVarint(b, in.Mtime)
	b = binary.AppendVarint(b, in.Ctime)
	b = binary.AppendUvarint(b, uint64(len(in.Target)))
	b = append(b, in.Target...)
	b = append(b, byte(in.Content.Kind))
	b = binary.AppendUvarint(b, uint64(len(in.Content.Chunks)))
	for _, c := range in.Content.Chunks {
		b = append(b, c.Hash[:]...)
		b = binary.AppendUvarint(b, uint64(c.Len))
	}
	if version == inodeVersion1 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(in.Nlink))
	b = binary.AppendUvarint(b, uint64(in.Rdev))
	names := slices.Sorted(maps.Keys(in.Xattrs)) // one record for one state
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, k := range names {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(in.Xattrs[k])))
		b = append(b, in.Xattrs[k]...)
	}
	if version == inodeVersion3 {
		b = binary.AppendUvarint(b, in.Content.Staged)
		b = binary.AppendUvarint(b, uint64(in.Content.Size))
	}
	return b
}

// decoder reads varints from a record, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("record truncated")

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.err = errShort
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 && d.err == nil {
		d.err = errors.New("value out of range")
	}
	return uint32(v)
}

// links reads the part of a version 2 record after the chunks.
func (d *decoder) links(in *Inode) {
	if in.Nlink = d.uint32(); in.Nlink == 1 {
		in.Nlink = 0 // as a version 1 record says it
	}
	in.Rdev = d.uint32()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b))/2 {
		d.err = errShort
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.bytes(d.uvarint())
		v := d.bytes(d.uvarint())
		if d.err != nil {
			break
		}
		if in.Xattrs == nil {
			in.Xattrs = map[string][]byte{}
		}
		if _, dup := in.Xattrs[string(k)]; dup {
			d.err = errors.New("extended attribute listed twice")
		}
		in.Xattrs[string(k)] = bytes.Clone(v)
	}
}

// DecodeInode parses a record written by encodeInode.
func DecodeInode(ino uint64, b []byte) (*Inode, error) {
	in, d, err := decodeHead(ino, b)
	if err != nil {
		return nil, err
	}
	if b[0] >= inodeVersion2 {
		d.links(in)
	}
	if b[0] == inodeVersion3 {
		in.Content.Staged = d.uvarint()
		size := d.uvarint()
		switch {
		case d.err != nil:
		case in.Content.Staged == 0 || len(in.Content.Chunks) > 0 || size > math.MaxInt64:
			d.err = errors.New("staged content is malformed")
		default:
			in.Content.Size = int64(size)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("inode %d: %v: %w", ino, d.err, chunk.ErrCorrupt)
	}
	return in, nil
}

// DecodeChunks reads only the chunk list of a record, for those who need
// nothing else of it (reclaim): the links and attributes after it, up to
// 64 KiB of them, are not decoded.
func DecodeChunks(ino uint64, b []byte) ([]chunk.Ref, error) {
	in, _, err := decodeHead(ino, b)
	if err != nil {
		return nil, err
	}
	return in.Content.Chunks, nil
}

// decodeHead reads a record up to its chunk list, which every version
// holds the same way, and returns the decoder at what follows.
func decodeHead(ino uint64, b []byte) (*Inode, *decoder, error) {
	if len(b) == 0 || b[0] < inodeVersion1 || b[0] > inodeVersion3 {
		return nil, nil, fmt.Errorf("inode %d: unknown record version: %w", ino, chunk.ErrCorrupt)
	}
	d := &decoder{b: b[1:]}
	in := &Inode{Ino: ino}
	in.Mode = d.uint32()
	in.Uid = d.uint32()
	in.Gid = d.uint32()
	in.Atime, in.Mtime, in.Ctime = d.varint(), d.varint(), d.varint()
	in.Target = string(d.bytes(d.uvarint()))
	if k := d.bytes(1); k != nil {
		in.Content.Kind = Kind(k[0])
	}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b))/33 {
		d.err = errShort
	}
	if d.err == nil {
		in.Content.Chunks = make([]chunk.Ref, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		c := &in.Content.Chunks[i]
		copy(c.Hash[:], d.bytes(32))
		c.Len = d.uint32()
		in.Content.Size += int64(c.Len)
	}
	if d.err != nil {
		return nil, nil, fmt.Errorf("inode %d: %v: %w", ino, d.err, chunk.ErrCorrupt)
	}
	return in, d, nil
}
