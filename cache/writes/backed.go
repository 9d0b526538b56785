package writes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"golang.org/x/sys/unix"
)

// Backed is a file's content while the kernel reads and writes it itself
// (FUSE passthrough): one local file, the backing file of every open of
// the inode, which writes reach without a round trip to the daemon. It
// starts as an empty draft file; its first commit stages it, and later
// commits record its new length in place. From that first commit to Close
// it holds a lease on its staged file, so the settler takes it only once
// the kernel can no longer write it.
//
// Unlike a Draft's, a backed file's bytes are its opens' to change between
// commits, as a local file's are: the staged bytes a record names change
// in place while the lease lasts. Its durability follows a Draft's: a
// commit that lengthens a synced file makes the bytes durable before the
// record that names them (see appendedToSynced).
//
// It is not safe for concurrent use: the file system calls it under the
// node's lock.
type Backed struct {
	w    *Path
	ino  uint64
	name string // the file's path, for messages and its checkpoint
	file *os.File
	// committed is the staged content of the backing file, nil before the
	// first commit staged it; recorded says a record took it; release
	// ends the lease on its file.
	committed *meta.Content
	recorded  bool
	release   func()
}

// backedRoom is the room a backing file starts with, on top of the
// reserves: no grant checks the kernel's writes, so backing files are
// handed out only while the disk is far from full (ENOSPC from the disk
// itself is then the rare case Commit reports).
const backedRoom = 1 << 30

// CanBack reports whether a file may get a backing file now: the path
// writes behind, and the disk has a tenth of its size free (and at least
// backedRoom) past the reserves and root's share.
func (w *Path) CanBack() bool {
	return w.Behind() && w.st.Roomy(backedRoom, store.ChunkReserve+w.settler.backlog.Load(), 10)
}

// NewBacked starts the content of inode ino (at name) as an empty backing
// file.
func (w *Path) NewBacked(ino uint64, name string) (*Backed, error) {
	f, err := os.CreateTemp(w.st.DraftsDir(), "backed-*")
	if err != nil {
		return nil, fmt.Errorf("backing file: %w", err)
	}
	return &Backed{w: w, ino: ino, name: name, file: f}, nil
}

// CommittedSize is the length the last commit recorded, 0 before it.
func (b *Backed) CommittedSize() int64 {
	if b.committed == nil {
		return 0
	}
	return b.committed.Size
}

// BackStaged makes the staged file of content c, inode ino's at name, the
// backing file of its opens: a file saved a moment ago is read at the
// disk's speed, and a writer that joins writes it in place. It is leased
// until Close, which stops a settle under way; ok is false when c is not
// staged, or its file is being swapped for its chunks or going.
func (w *Path) BackStaged(ino uint64, name string, c *meta.Content) (*Backed, bool) {
	f, release, ok := w.lease(c)
	if !ok {
		return nil, false
	}
	// The kernel reads a backing file to its own end: bytes past what the
	// record names (an append never committed, a crash's leftovers) are
	// nobody's and go; a file shorter than its record is left to the
	// daemon's path, which reports it.
	st, err := f.Stat()
	if err == nil && st.Size() > c.Size {
		err = f.Truncate(c.Size)
	}
	if err != nil || st.Size() < c.Size {
		f.Close()
		release()
		return nil, false
	}
	return &Backed{w: w, ino: ino, name: name, file: f, committed: c, recorded: true, release: release}, true
}

// Fd is the backing file's descriptor, for the kernel to take.
func (b *Backed) Fd() int { return int(b.file.Fd()) }

// stat reports the backing file's length and modification time, which
// the kernel's writes change without the daemon.
func (b *Backed) stat() (size, mtime int64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(b.Fd(), &st); err != nil {
		return 0, 0, fmt.Errorf("backing file of %s: %w", b.name, err)
	}
	return st.Size, st.Mtim.Nano(), nil
}

// Size is the length the opens have written.
func (b *Backed) Size() (int64, error) {
	size, _, err := b.stat()
	return size, err
}

// ReadAt and WriteAt serve the opens the kernel did not take over (a
// kernel without passthrough, or a daemon without CAP_SYS_ADMIN).
func (b *Backed) ReadAt(p []byte, off int64) (int, error) { return b.file.ReadAt(p, off) }

// WriteAt writes p at off for user uid.
func (b *Backed) WriteAt(p []byte, off int64, uid uint32) error {
	size, err := b.Size()
	if err != nil {
		return err
	}
	if grow := min(off+int64(len(p))-size, int64(len(p))); grow > 0 {
		if err := b.w.ensureSpace(grow, uid); err != nil {
			return err
		}
	}
	if _, err := b.file.WriteAt(p, off); err != nil {
		return fmt.Errorf("backing file of %s: %w", b.name, err)
	}
	return nil
}

// Truncate sets the length to size; a Commit records it. A cut below what
// a record names is recorded first: a crash between the two then leaves a
// record no longer than its file (a record longer than its staged file
// costs the whole file at the next mount).
func (b *Backed) Truncate(ctx context.Context, size int64, unlinked bool) error {
	if b.committed != nil && size < b.committed.Size {
		synced := b.w.synced(b.committed)
		_, mtime, err := b.stat()
		if err != nil {
			return err
		}
		if _, _, err := b.commit(ctx, size, mtime, unlinked); err != nil {
			return err
		}
		// A record durable before the cut: the file may be cut on disk
		// before Badger writes the record back.
		if synced {
			if err := b.w.Sync(); err != nil {
				return err
			}
		}
	}
	if err := b.file.Truncate(size); err != nil {
		return fmt.Errorf("backing file of %s: %w", b.name, err)
	}
	return nil
}

// SetMtime sets the backing file's modification time, which the next
// commit records: a utimens after the last write wins, as on a local disk.
func (b *Backed) SetMtime(ns int64) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(ns)}
	return unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", b.Fd()), ts, 0)
}

// Commit records the backing file's bytes as the file's content, and
// returns it with a reader of it. A file its user unlinked meanwhile
// (unlinked) takes nothing. The backing file stays the opens' until Close.
func (b *Backed) Commit(ctx context.Context, unlinked bool) (*meta.Content, *store.FileReader, error) {
	size, mtime, err := b.stat()
	if err != nil {
		return nil, nil, err
	}
	return b.commit(ctx, size, mtime, unlinked)
}

// commit records size bytes of the backing file, modified at mtime.
func (b *Backed) commit(ctx context.Context, size, mtime int64, unlinked bool) (*meta.Content, *store.FileReader, error) {
	// The kernel's writes fail with ENOSPC without the daemon hearing of
	// it: a disk full to the chunk reserve may have failed some, so the
	// commit fails rather than record what may lack them.
	if !b.w.st.Roomy(0, store.ChunkReserve, 0) {
		return nil, nil, fmt.Errorf("%s: the disk filled up while it was written, some writes may have failed: %w", b.name, syscall.ENOSPC)
	}
	// stage and restage own the file they are given: they get one of
	// their own, and the kernel's stays open.
	fd, err := unix.FcntlInt(uintptr(b.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("backing file of %s: %w", b.name, err)
	}
	f := os.NewFile(uintptr(fd), b.file.Name())
	var c *meta.Content
	if b.committed == nil {
		if c, err = b.w.stage(f, size, false); err != nil {
			return nil, nil, err
		}
		// Leased before any record queues it: the settler never sees it
		// unleased while the kernel may write it.
		lf, release, ok := b.w.lease(c)
		if !ok {
			b.w.unstage(c)
			return nil, nil, fmt.Errorf("backing file of %s: staged file %x would not lease", b.name, c.Staged)
		}
		lf.Close()
		b.release = release
	} else {
		// A synced file stays synced: what a later appender adds is then
		// made durable before its record (see appendedToSynced).
		durably := b.w.synced(b.committed)
		if c, err = b.w.restage(f, b.committed, size, durably); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	_, err = b.w.st.Namespace().Update(b.ino, func(in *meta.Inode) error {
		in.Content = *c
		in.Mtime, in.Ctime = mtime, time.Now().UnixNano()
		return nil
	})
	b.committed = c
	b.recorded = b.recorded || err == nil
	if errors.Is(err, syscall.ENOENT) {
		if !unlinked {
			return nil, nil, fmt.Errorf("%s: %w", b.name, ErrReplaced)
		}
		return c, b.w.st.NewReader(b.name, c), nil
	}
	if err != nil {
		return nil, nil, err
	}
	checkpoint, _, _ := strings.Cut(b.name, "/")
	return c, b.w.st.NewReader(b.name, c), b.w.st.Publish(ctx, checkpoint)
}

// Close ends the backing once the kernel holds it no more: the staged
// file goes to the settler, a file never committed or no longer recorded
// (unlinked) goes at once.
func (b *Backed) Close(unlinked bool) {
	b.file.Close()
	switch {
	case b.committed == nil:
		os.Remove(b.file.Name())
	case unlinked || !b.recorded: // no record names the staged file
		b.w.unstage(b.committed)
		b.release()
	default:
		b.release() // kicks the settler
	}
}
