package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// GCResult reports what a collection freed.
type GCResult struct {
	Chunks, ChunkBytes int64 // unreferenced chunks deleted and their stored size
	Inodes             int64 // unreachable inode records deleted
	ValueLogRewrites   int   // value-log files Badger rewrote to return space
}

// reachable walks the namespace from the root and returns every reachable
// inode number and the first path that references each chunk.
func (s *Store) reachable() (map[uint64]bool, map[Hash]string, error) {
	inodes := map[uint64]bool{RootIno: true}
	chunks := map[Hash]string{}
	err := s.Walk(RootIno, func(rel string, in *Inode) error {
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

// scanKeys calls fn with every key under prefix and its stored value size.
func (s *Store) scanKeys(prefix byte, fn func(key []byte, valueSize int64) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := fn(it.Item().KeyCopy(nil), it.Item().ValueSize()); err != nil {
				return err
			}
		}
		return nil
	})
}

// GC deletes chunks no reachable file references and inode records no
// directory reaches (mark and sweep), then lets Badger reclaim value-log
// space. Run it only while nothing is writing: the store must not be mounted.
func (s *Store) GC() (*GCResult, error) {
	inodes, chunks, err := s.reachable()
	if err != nil {
		return nil, fmt.Errorf("gc mark: %w", err)
	}
	res := &GCResult{}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err = s.scanKeys(prefixChunk, func(key []byte, size int64) error {
		var h Hash
		copy(h[:], key[1:])
		if _, ok := chunks[h]; ok {
			return nil
		}
		res.Chunks++
		res.ChunkBytes += size
		return wb.Delete(key)
	})
	if err == nil {
		err = s.scanKeys(prefixInode, func(key []byte, _ int64) error {
			if len(key) != 9 || inodes[binary.BigEndian.Uint64(key[1:])] {
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

// clearStaging removes staging files left by a process that died.
func (s *Store) clearStaging() error {
	entries, err := os.ReadDir(s.StagingDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(s.StagingDir(), e.Name())); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return nil
}
