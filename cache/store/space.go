package store

import (
	"fmt"
	"sync"
	"syscall"
	"time"
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
	if s.space.grant(n, reserve, user) {
		return nil
	}
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
	s.space.took(n)
	return nil
}

// Roomy reports whether n bytes, and with diskPart > 0 a diskPart-th of
// the disk and root's share of it, fit with reserve, as a reading of the
// disk now says, making no room: for a choice that can go another way (a
// backing file the kernel writes, whose writes no grant checks).
func (s *Store) Roomy(n, reserve, diskPart int64) bool {
	free, total, err := s.diskSpace()
	if err != nil {
		return false
	}
	if diskPart > 0 {
		n = max(n, total/diskPart)
		reserve += min(max(total/20, rootShareMin), rootShareMax)
	}
	return free >= n+reserve
}

// diskSpace is what the store's file system has free, and its size.
func (s *Store) diskSpace() (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	free, total = int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize
	s.space.read(free, total)
	return free, total, nil
}

// freeSpace is the last reading of the free space, and what was granted
// since: a write far from the limit is let through on it, where a statfs
// per write (and per chunk) would cost a system call each. Near the limit,
// or after spaceFresh, the space is read again.
type freeSpace struct {
	mu      sync.Mutex
	at      time.Time
	free    int64
	total   int64
	granted int64
}

const (
	spaceFresh = time.Second
	// spaceSlack is kept on top of a reserve when granting from a reading,
	// for what others write to the disk meanwhile.
	spaceSlack = 256 << 20
)

func (f *freeSpace) read(free, total int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at, f.free, f.total, f.granted = time.Now(), free, total, 0
}

// took counts n bytes granted after a reading.
func (f *freeSpace) took(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.granted += n
}

// grant reports whether n bytes fit with reserve (and root's share, for a
// user) by the last reading, and counts them granted if so.
func (f *freeSpace) grant(n, reserve int64, user bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if user {
		reserve += min(max(f.total/20, rootShareMin), rootShareMax)
	}
	if f.at.IsZero() || time.Since(f.at) > spaceFresh || f.free-f.granted-n < reserve+spaceSlack {
		return false
	}
	f.granted += n
	return true
}

func (s *Store) freeBytes() (int64, error) {
	free, _, err := s.diskSpace()
	return free, err
}
