package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Staged content is a file's committed content not chunked yet: the whole
// of a file in the store's staged folder, which the record names by id
// (meta.Content.Staged). The write path (cache/writes) makes such files
// and settles them into chunks; the store reads them.

// StagedDir holds the staged content of files committed but not chunked
// yet.
func (s *Store) StagedDir() string { return filepath.Join(s.dir, "staged") }

// StagedPath is the file of staged content id.
func (s *Store) StagedPath(id uint64) string {
	return filepath.Join(s.StagedDir(), strconv.FormatUint(id, 16))
}

// DraftsDir holds the files being written and not committed yet.
func (s *Store) DraftsDir() string { return filepath.Join(s.dir, "drafts") }

// stagedReader reads staged content from its file.
type stagedReader struct {
	f   *os.File
	err error // the file would not open
}

// openStaged opens the staged file of c; the file closes when the reader
// holding it is garbage.
func (s *Store) openStaged(c *meta.Content) *stagedReader {
	f, err := os.Open(s.StagedPath(c.Staged))
	if err != nil {
		return &stagedReader{err: fmt.Errorf("staged content: %w: %w", err, chunk.ErrCorrupt)}
	}
	sr := &stagedReader{f: f}
	runtime.AddCleanup(sr, func(f *os.File) { f.Close() }, f)
	return sr
}

// readAt reads as FileReader.ReadAt does: short only at the end.
func (sr *stagedReader) readAt(r *FileReader, p []byte, off int64) (int, error) {
	if sr.err != nil {
		return 0, fmt.Errorf("%s: %w", r.name, sr.err)
	}
	if off >= r.Size() {
		return 0, io.EOF
	}
	want := min(int64(len(p)), r.Size()-off)
	n, err := sr.f.ReadAt(p[:want], off)
	if int64(n) == want {
		if want < int64(len(p)) {
			return n, io.EOF
		}
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("staged file %s ends at %d bytes, the record says %d: %w", sr.f.Name(), off+int64(n), r.Size(), chunk.ErrCorrupt)
		r.store.log.Error("read failed verification", "file", r.name, "err", err)
	}
	return n, fmt.Errorf("%s: %w", r.name, err)
}

// CheckStaged reports whether staged content c has its staged file, of at
// least its length (a writer may be appending past it). The bytes have no
// hash to check before they are chunked.
func (s *Store) CheckStaged(c *meta.Content) error {
	fi, err := os.Stat(s.StagedPath(c.Staged))
	if err != nil {
		return fmt.Errorf("staged content: %w", err)
	}
	if fi.Size() < c.Size {
		return fmt.Errorf("staged file %s holds %d bytes, the record says %d", fi.Name(), fi.Size(), c.Size)
	}
	return nil
}
