package writes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// Draft is a file's content while it is written: writes and truncates at
// any offset, reads of what was written, and a commit that makes it the
// file's content in one transaction. It is not safe for concurrent use:
// the file system shares one among a file's writers under a lock, as a
// local file's page cache is shared.
//
// Writing behind, every write lands in a draft file, which a commit
// stages; a file whose content is staged takes appends in its staged file
// itself, past what its record names, under a lease the settler respects.
// Otherwise writes in order from an empty file stream into ingest, and
// anything else (an out-of-order write, a truncate, a read of what was
// written) moves the content to a draft file, which a commit chunks.
type Draft struct {
	w    *Path
	ino  uint64
	name string // the file's path, for messages and its checkpoint
	base *meta.Content
	// baseReader reads base. It holds a staged base's file open, so the
	// bytes are there after the settler removes its name.
	baseReader *store.FileReader
	stream     *stream  // content written in order
	file       *os.File // content written at random
	// appending says file is base's own staged file, written past
	// base.Size only, under the lease release ends.
	appending bool
	release   func()
	// changedBase says a write or a truncate reached into base's bytes:
	// the commit is not base with bytes appended.
	changedBase bool
	size        int64
	mtime       int64
}

// NewDraft starts the content of inode ino (at name) from base, which
// baseReader reads.
func (w *Path) NewDraft(ino uint64, name string, base *meta.Content, baseReader *store.FileReader) *Draft {
	return &Draft{w: w, ino: ino, name: name, base: base, baseReader: baseReader, size: base.Size}
}

// Size is the length the writes have reached.
func (d *Draft) Size() int64 { return d.size }

// SetMtime sets the modification time the commit records: a utimens after
// the last write wins (cp -a and tar set times before they close).
func (d *Draft) SetMtime(ns int64) { d.mtime = ns }

// WriteAt writes p at off for user uid.
func (d *Draft) WriteAt(p []byte, off int64, uid uint32) error {
	behind := d.w.Behind()
	if d.stream == nil && d.file == nil && d.size == 0 && off == 0 && !behind {
		d.stream = newStream(d.w.st)
	}
	if d.stream == nil && d.file == nil && off >= d.size && d.size == d.base.Size && behind {
		d.appendInPlace()
	}
	if off < d.base.Size {
		d.changedBase = true
	}
	if d.appending && off < d.base.Size {
		if err := d.copyStaged(d.size, uid); err != nil {
			return err
		}
	}
	if d.stream == nil || off != d.stream.Len() {
		if err := d.toFile(uid); err != nil {
			return err
		}
	}
	if d.stream != nil {
		// The chunks ingest stores keep only the store's reserve free:
		// another user's stream leaves root's share too.
		if uid != 0 {
			if err := d.w.ensureSpace(int64(len(p)), uid); err != nil {
				return err
			}
		}
		if _, err := d.stream.Write(p); err != nil {
			return err
		}
	} else {
		// A write past the end allocates what it writes, not the hole
		// before it.
		if grow := min(off+int64(len(p))-d.size, int64(len(p))); grow > 0 {
			if err := d.w.ensureSpace(grow, uid); err != nil {
				return err
			}
		}
		if _, err := d.file.WriteAt(p, off); err != nil {
			return fmt.Errorf("draft file: %w", err)
		}
	}
	d.size = max(d.size, off+int64(len(p)))
	d.mtime = time.Now().UnixNano()
	return nil
}

// appendInPlace makes the staged file of a staged base the draft file, if
// the settler lets it: appends then cost what they write, where a copy
// would cost the whole file at every commit.
func (d *Draft) appendInPlace() {
	if f, release, ok := d.w.lease(d.base); ok {
		d.file, d.appending, d.release = f, true, release
	}
}

// copyStaged gives up appending in place: the first size bytes of the
// staged file go to a draft file of the writers' own, which may then
// change anything. The staged file loses what was appended to it.
func (d *Draft) copyStaged(size int64, uid uint32) error {
	f, err := d.newFile(size, uid)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(io.NewSectionReader(d.file, 0, size)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("draft file: %w", err)
	}
	d.Discard()
	d.file = f
	return nil
}

// ReadAt reads what was written.
func (d *Draft) ReadAt(p []byte, off int64) (int, error) {
	if err := d.toFile(0); err != nil {
		return 0, err
	}
	return d.file.ReadAt(p[:max(min(int64(len(p)), d.size-off), 0)], off)
}

// toFile moves the content into a draft file, which takes writes and
// reads at any offset.
func (d *Draft) toFile(uid uint32) error {
	if d.file != nil {
		return nil
	}
	r := d.baseReader
	if d.stream != nil {
		c, release, err := d.stream.Close()
		d.stream = nil
		if err != nil {
			return err
		}
		defer release() // its chunks stay until they are copied
		r = d.w.st.NewReader(d.name, c)
	}
	f, err := d.newFile(r.Size(), uid)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, io.NewSectionReader(r, 0, r.Size())); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("draft file: %w", err)
	}
	d.file = f
	return nil
}

// newFile makes a draft file for size bytes to come.
func (d *Draft) newFile(size int64, uid uint32) (*os.File, error) {
	if err := d.w.ensureSpace(size, uid); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(d.w.st.DraftsDir(), "write-*")
	if err != nil {
		return nil, fmt.Errorf("draft file: %w", err)
	}
	return f, nil
}

// Truncate sets the length to size, for user uid.
func (d *Draft) Truncate(size int64, uid uint32) error {
	if d.stream != nil && size == d.stream.Len() {
		return nil
	}
	d.mtime = time.Now().UnixNano()
	if size == 0 {
		d.Discard()
		d.base, d.size = &meta.Content{}, 0
		d.baseReader = d.w.st.NewReader(d.name, d.base)
		return nil
	}
	if size < d.base.Size {
		d.changedBase = true
	}
	if d.appending && size < d.base.Size {
		if err := d.copyStaged(size, uid); err != nil {
			return err
		}
	}
	if err := d.toFile(uid); err != nil {
		return err
	}
	// Growing makes a hole, which takes no room.
	if err := d.file.Truncate(size); err != nil {
		return fmt.Errorf("draft file: %w", err)
	}
	d.size = size
	return nil
}

// ErrReplaced is a commit to a file whose record is gone although no user
// removed it: its checkpoint was replaced from a bucket under the writer.
var ErrReplaced = errors.New("replaced by another mount's version while open for writing: these writes are not kept")

// Commit stores the content and makes it the file's, and returns it with
// a reader of it. A file its user unlinked meanwhile (unlinked) takes
// nothing: its content is returned for the handles still open, and a
// staged file no record took goes at once. The draft is done with after
// it, whatever the outcome.
func (d *Draft) Commit(ctx context.Context, unlinked bool) (*meta.Content, *store.FileReader, error) {
	defer d.Discard()
	var c *meta.Content
	var err error
	release := func() {}
	defer func() { release() }() // a stream's chunks stay until the record holds them
	switch {
	case d.stream != nil:
		c, release, err = d.stream.Close()
		d.stream = nil
	case d.appending:
		if c, err = d.w.restage(d.file, d.base, d.size, d.appendedToSynced()); err == nil {
			d.file = nil // the path's now; the lease holds until Discard
		}
	case d.file != nil && d.w.Behind():
		c, err = d.w.stage(d.file, d.size, d.appendedToSynced())
		d.file = nil
	case d.file != nil:
		c, release, err = d.w.st.Ingest(io.NewSectionReader(d.file, 0, d.size))
	default:
		c = d.base // opened for writing, nothing changed but maybe a truncate to 0
	}
	if err == nil && len(c.Chunks) > 0 && !c.Equal(d.base) {
		err = d.w.st.SyncChunks() // no record names chunks not durable
	}
	if err != nil {
		return nil, nil, err
	}
	_, err = d.w.st.Namespace().Update(d.ino, func(in *meta.Inode) error {
		in.Content = *c
		in.Mtime, in.Ctime = d.mtime, time.Now().UnixNano()
		return nil
	})
	if errors.Is(err, syscall.ENOENT) {
		if !unlinked {
			return nil, nil, fmt.Errorf("%s: %w", d.name, ErrReplaced)
		}
		r := d.w.st.NewReader(d.name, c) // opened before its staged file goes
		if c.Staged != 0 && !d.appending {
			d.w.unstage(c)
		}
		return c, r, nil
	}
	if err != nil {
		return nil, nil, err
	}
	r := d.w.st.NewReader(d.name, c)
	if c.Staged != 0 {
		d.w.settler.kick()
	}
	// In front of a bucket, a commit waits until the bucket holds the file.
	checkpoint, _, _ := strings.Cut(d.name, "/")
	return c, r, d.w.st.Publish(ctx, checkpoint)
}

// appendedToSynced says the commit appends to a durable version of the
// file, a log fsynced now and then: what it appends is then made durable
// before the record that names it. Otherwise a power cut that kept the
// record and not the appended bytes would cost the whole file (a file cut
// short is removed at the next mount, see dropLost), the bytes an fsync
// promised with it, where a local disk keeps them. Other commits written
// behind are made durable by the next sync, and read back after a power
// cut whole or not at all.
func (d *Draft) appendedToSynced() bool {
	return !d.changedBase && d.base.Size > 0 && d.size > d.base.Size && d.w.synced(d.base)
}

// Discard drops what was written and not committed, and ends a lease.
func (d *Draft) Discard() {
	if d.stream != nil {
		d.stream.Abort()
		d.stream = nil
	}
	if d.appending {
		if d.file != nil { // what it appended is nobody's
			d.file.Truncate(d.base.Size)
			d.file.Close()
			d.file = nil
		}
		d.appending = false
		d.release()
	}
	if d.file != nil {
		d.file.Close()
		os.Remove(d.file.Name())
		d.file = nil
	}
}
