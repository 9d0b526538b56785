package cache

import (
	"fmt"
	"syscall"
)

// Badger writes its value log and memtables through memory maps: on a full
// disk that is a SIGBUS that kills the daemon, not an error. So writes are
// refused with ENOSPC while the store's file system has less free space
// than a reserve that covers a memtable flush and the write itself.
const (
	chunkReserve = 64 << 20 // before storing a chunk
	metaReserve  = 32 << 20 // before creating an entry
)

// ensureSpace fails with ENOSPC unless n bytes plus reserve are free,
// after the makeRoom of SetMakeRoom had its chance to free them. The space
// is read again whatever makeRoom says it freed: two writers short at once
// both ask, and the one that finds the copies already gone frees nothing
// although the room is there now.
func (s *Store) ensureSpace(n, reserve int64) error {
	free, err := s.freeBytes()
	if err == nil && free < n+reserve && s.makeRoom != nil {
		s.makeRoom(n + reserve - free)
		free, err = s.freeBytes()
	}
	if err != nil {
		return err
	}
	if free < n+reserve {
		return fmt.Errorf("store %s: %d bytes free, keeping %d in reserve: %w", s.dir, free, reserve, syscall.ENOSPC)
	}
	return nil
}

func (s *Store) freeBytes() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// EnsureStagingSpace fails with ENOSPC unless n more bytes of a staging
// file fit with the chunk reserve kept: staging shares the store's disk,
// and filling it would leave Badger's next flush without room. Staged
// files not chunked yet count twice, as their chunks will take up to as
// much room before the files go (see settle.go).
func (s *Store) EnsureStagingSpace(n int64) error {
	return s.ensureSpace(n, chunkReserve+s.settler.backlog.Load())
}
