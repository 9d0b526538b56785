package store

import (
	"fmt"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// Stats describe the space a subtree of the namespace uses.
type Stats struct {
	Files   int64
	Logical int64 // sum of file sizes
	Unique  int64 // raw bytes of the distinct chunks (after dedup)
	Stored  int64 // bytes those chunks take in the store (after compression)
	// Files whose content is staged, not chunked yet (see settle.go), and
	// their bytes: in Logical, not in Unique or Stored.
	Staged, StagedBytes int64
}

// Stats sums the files below ino (or ino itself, if it is a file).
func (s *Store) Stats(ino uint64) (*Stats, error) {
	st := &Stats{}
	seen := map[chunk.Hash]bool{}
	files := map[uint64]bool{} // a file with hard links counts once, as du counts it
	add := func(in *meta.Inode) {
		if in.Mode&syscall.S_IFMT != syscall.S_IFREG || files[in.Ino] {
			return
		}
		files[in.Ino] = true
		st.Files++
		st.Logical += in.Content.Size
		if in.Content.Staged != 0 {
			st.Staged++
			st.StagedBytes += in.Content.Size
		}
		for _, c := range in.Content.Chunks {
			if !seen[c.Hash] {
				seen[c.Hash] = true
				st.Unique += int64(c.Len)
			}
		}
	}
	in, err := s.ns.GetInode(ino)
	if err != nil {
		return nil, err
	}
	add(in)
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if err := s.ns.Walk(ino, func(_ string, in *meta.Inode) error { add(in); return nil }); err != nil {
			return nil, err
		}
	}
	err = s.ScanChunks(func(h chunk.Hash, loc pack.Loc, err error) error {
		if seen[h] && err == nil {
			st.Stored += int64(loc.Len)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	return st, nil
}
