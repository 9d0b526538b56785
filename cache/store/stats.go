package store

import (
	"fmt"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/ckptfs/ckptfs/cache/reclaim"
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
	// Deltas counts the chunks stored as deltas against another version
	// (see StoreAsDeltas), and DeltaBytes what they take; KeptForDeltas is
	// what the chunks those deltas need, and the subtree does not name,
	// take: in Stored.
	Deltas, DeltaBytes, KeptForDeltas int64
}

// Stats sums the files below each of inos (or the file itself), each file
// and chunk counted once.
func (s *Store) Stats(inos ...uint64) (*Stats, error) {
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
	for _, ino := range inos {
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
	}
	refOf := map[chunk.Hash]chunk.Hash{}
	if err := s.index.References(func(h, ref chunk.Hash) error { refOf[h] = ref; return nil }); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	named := make(map[chunk.Hash]struct{}, len(seen))
	for h := range seen {
		named[h] = struct{}{}
	}
	needed := reclaim.NeededReferences(named, refOf)
	err := s.ScanChunks(func(h chunk.Hash, loc pack.Loc, err error) error {
		if err != nil {
			return nil
		}
		_, need := needed[h]
		switch {
		case seen[h]:
			st.Stored += int64(loc.Len)
			if _, ok := refOf[h]; ok {
				st.Deltas++
				st.DeltaBytes += int64(loc.Len)
			}
		case need:
			st.Stored += int64(loc.Len)
			st.KeptForDeltas += int64(loc.Len)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	return st, nil
}
