package store

import (
	"encoding/binary"

	"github.com/ckptfs/ckptfs/cache/hot"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/zeebo/blake3"
)

// ContentKey names content by its size and chunk list, or its staged file,
// as hot copies of it are named.
func ContentKey(c *meta.Content) string {
	return hot.KeyFrom(func(h *blake3.Hasher) {
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(c.Size)))
		if c.Staged != 0 {
			h.Write(binary.LittleEndian.AppendUint64([]byte("staged"), c.Staged))
		}
		for _, ch := range c.Chunks {
			h.Write(ch.Hash[:])
		}
	})
}
