package cache

import (
	"errors"
	"fmt"
	"os"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/dgraph-io/badger/v4"
)

// GCResult reports what a collection freed.
type GCResult struct {
	Chunks, ChunkBytes int64 // unreferenced chunks deleted and their stored size
	Inodes             int64 // unreachable inode records deleted
	PacksRewritten     int   // packs whose live records were copied to a new pack
	PacksRemoved       int   // pack files deleted
	PackBytesFreed     int64 // disk space the deleted packs took, less what was copied
	ValueLogRewrites   int   // value-log files Badger rewrote to return space
}

// A pack is rewritten once this fraction of it is garbage.
const packGarbageRatio = 0.25

// reachable walks the namespace from the root and returns every reachable
// inode number and the first path that references each chunk.
func (s *Store) reachable() (map[uint64]bool, map[chunk.Hash]string, error) {
	inodes := map[uint64]bool{meta.RootIno: true}
	chunks := map[chunk.Hash]string{}
	err := s.Walk(meta.RootIno, func(rel string, in *meta.Inode) error {
		inodes[in.Ino] = true
		for _, c := range in.Content.Chunks {
			if _, ok := chunks[c.Hash]; !ok {
				chunks[c.Hash] = rel
			}
		}
		return nil
	})
	return inodes, chunks, err
}

// packRecord is a live chunk in a pack.
type packRecord struct {
	hash chunk.Hash
	loc  pack.Loc
}

// GC deletes chunks no reachable file references and inode records no
// directory reaches (mark and sweep), deletes the packs left empty and
// rewrites those mostly garbage, then lets Badger reclaim value-log space.
// Run it only while nothing is writing: the store must not be mounted.
func (s *Store) GC() (*GCResult, error) {
	s.packs.Seal() // records copied below go to a pack that is not a candidate
	packIDs, err := s.packs.List()
	if err != nil {
		return nil, fmt.Errorf("gc: list packs: %w", err)
	}
	inodes, chunks, err := s.reachable()
	if err != nil {
		return nil, fmt.Errorf("gc mark: %w", err)
	}
	res := &GCResult{}
	live := map[uint32][]packRecord{}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err = s.ScanChunks(func(h chunk.Hash, loc pack.Loc, err error) error {
		if err != nil {
			s.log.Warn("gc: chunk left in place", "chunk", h.String(), "err", err)
			return nil // fsck reports it
		}
		if _, ok := chunks[h]; ok {
			live[loc.Pack] = append(live[loc.Pack], packRecord{h, loc})
			return nil
		}
		res.Chunks++
		res.ChunkBytes += int64(loc.Len)
		return wb.Delete(meta.ChunkKey(h))
	})
	if err == nil {
		err = s.InodeKeys(func(key []byte) error {
			if ino, ok := meta.InodeOfKey(key); !ok || inodes[ino] {
				return nil
			}
			res.Inodes++
			return wb.Delete(key)
		})
	}
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("gc sweep: %w", err)
	}
	if err := s.sweepPacks(packIDs, live, res); err != nil {
		return res, err
	}
	// Compaction turns deletions into discard statistics the value-log GC uses.
	if err := s.db.Flatten(1); err != nil {
		s.log.Warn("gc: flatten", "err", err)
	}
	for {
		err := s.db.RunValueLogGC(0.3)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("gc value log: %w", err)
		}
		res.ValueLogRewrites++
	}
	return res, nil
}

// sweepPacks deletes packs with no live record, and copies the live records
// of packs that are mostly garbage to a new pack before deleting them. The
// old pack goes only once the new locations are durable, so a crash leaves
// every chunk readable from one pack or the other.
func (s *Store) sweepPacks(ids []uint32, live map[uint32][]packRecord, res *GCResult) error {
	var doomed []uint32
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, id := range ids {
		st, err := os.Stat(s.packs.Path(id))
		if err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		var used int64
		for _, r := range live[id] {
			used += pack.RecordHeader + int64(r.loc.Len)
		}
		if used > 0 && float64(st.Size()-used) < packGarbageRatio*float64(st.Size()) {
			continue
		}
		if err := s.copyRecords(live[id], wb); err != nil {
			s.log.Warn("gc: pack kept", "pack", s.packs.Path(id), "err", err)
			continue
		}
		if used > 0 {
			res.PacksRewritten++
		}
		res.PackBytesFreed += st.Size() - used
		doomed = append(doomed, id)
	}
	if err := s.packs.Sync(); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("gc: index rewritten records: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	for _, id := range doomed {
		if err := s.packs.Remove(id); err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		res.PacksRemoved++
	}
	return nil
}

// copyRecords appends records to the current pack and queues their new
// locations.
func (s *Store) copyRecords(recs []packRecord, wb *badger.WriteBatch) error {
	for _, r := range recs {
		var loc pack.Loc
		err := s.packs.Read(r.hash, r.loc, func(val []byte) error {
			var err error
			loc, err = s.packs.Append(r.hash, val)
			return err
		})
		if err != nil {
			return fmt.Errorf("chunk %s: %w", r.hash.Short(), err)
		}
		if err := wb.Set(meta.ChunkKey(r.hash), loc.Encode()); err != nil {
			return err
		}
	}
	return nil
}
