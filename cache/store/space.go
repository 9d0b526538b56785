package store

import (
	"fmt"
	"syscall"
)

// Badger writes its value log and memtables through memory maps: on a full
// disk that is a SIGBUS that kills the daemon, not an error. So writes are
// refused with ENOSPC while the store's file system has less free space
// than a reserve that covers a memtable flush and the write itself.
const (
	ChunkReserve = 64 << 20 // before storing a chunk
	metaReserve  = 32 << 20 // before creating an entry
)

// rootShare is the part of the store's disk that writes of users other
// than root leave free, as ext4 keeps blocks for root: one user filling the
// disk does not stop a job that runs as root. It is a twentieth of the
// disk, within these bounds.
const (
	rootShareMin = 64 << 20
	rootShareMax = 8 << 30
)

// EnsureSpace fails with ENOSPC unless n bytes plus reserve are free (plus
// root's share, for a user's write), after the makeRoom of SetMakeRoom had
// its chance to free them. The space is read again whatever makeRoom says
// it freed: two writers short at once both ask, and the one that finds the
// copies already gone frees nothing although the room is there now.
func (s *Store) EnsureSpace(n, reserve int64, user bool) error {
	free, total, err := s.diskSpace()
	if user {
		reserve += min(max(total/20, rootShareMin), rootShareMax)
	}
	if err == nil && free < n+reserve && s.makeRoom != nil {
		s.makeRoom(n + reserve - free)
		free, _, err = s.diskSpace()
	}
	if err != nil {
		return err
	}
	if free < n+reserve {
		return fmt.Errorf("store %s: %d bytes free, keeping %d in reserve: %w", s.dir, free, reserve, syscall.ENOSPC)
	}
	return nil
}

// diskSpace is what the store's file system has free, and its size.
func (s *Store) diskSpace() (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	return int64(st.Bavail) * st.Bsize, int64(st.Blocks) * st.Bsize, nil
}

func (s *Store) freeBytes() (int64, error) {
	free, _, err := s.diskSpace()
	return free, err
}
