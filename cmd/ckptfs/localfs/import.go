package localfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"golang.org/x/sys/unix"
)

// Importer copies local trees into a store.
type Importer struct {
	Store *store.Store
	Bar   interface{ Add64(int64) error }
	Files int               // files copied so far
	links map[fileID]uint64 // files with hard links imported so far: where they went
	// AfterStat, if set, runs between an entry's stat and its open: tests
	// swap the entry there.
	AfterStat func(src string)
	// batch holds files whose chunks are stored and whose records are not
	// written yet: one sync makes a batch's chunks durable before its
	// records name them, rather than one per file.
	batch      []importedFile
	batchBytes int64
}

// importedFile is a file stored as chunks, its record to be created.
type importedFile struct {
	src     string
	parent  uint64
	name    string
	rec     meta.Inode
	id      fileID // set for a file with more links to come
	release func() // the chunks' pins, held until the record names them
}

// Files stored before their records are written, at most.
const (
	importBatchFiles = 256
	importBatchBytes = 256 << 20
)

// Flush makes the batch's chunks durable and then creates its records:
// what Copy left in the batch is in the store once it returns.
func (im *Importer) Flush() error {
	batch := im.batch
	im.batch, im.batchBytes = nil, 0
	defer func() {
		for _, f := range batch {
			f.release()
		}
	}()
	if len(batch) == 0 {
		return nil
	}
	if err := im.Store.SyncChunks(); err != nil {
		return err
	}
	for _, f := range batch {
		in, err := im.Store.Namespace().Create(f.parent, f.name, f.rec)
		if err != nil {
			return fmt.Errorf("import %s: %w", f.src, err)
		}
		if f.id != (fileID{}) {
			if im.links == nil {
				im.links = map[fileID]uint64{}
			}
			im.links[f.id] = in.Ino
		}
	}
	return nil
}

// Copy stores local path src as name in folder parent, recursively; its
// last files wait for Flush.
func (im *Importer) Copy(src string, parent uint64, name string) error {
	return im.copyAt(unix.AT_FDCWD, src, src, parent, name)
}

// copyAt stores entry rel of the folder open as dirfd (src in messages).
// Each entry is opened relative to its folder without following a
// symlink, and its metadata is read from the opened file: a path swapped
// for a symlink meanwhile fails the import instead of storing a file the
// user could not read under the user's name and mode.
func (im *Importer) copyAt(dirfd int, rel, src string, parent uint64, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, rel, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := readlinkAt(dirfd, rel)
		if err != nil {
			return fmt.Errorf("import %s: %w", src, err)
		}
		rec := recordFrom(&st)
		rec.Target = target
		return im.create(src, parent, name, rec)
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK:
		rec := recordFrom(&st) // metadata only, as the mount keeps them
		rec.Rdev = uint32(st.Rdev)
		return im.create(src, parent, name, rec)
	case unix.S_IFDIR, unix.S_IFREG:
	default:
		return fmt.Errorf("import %s: file type %#o is not supported", src, st.Mode&unix.S_IFMT)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1 {
		if err := im.Flush(); err != nil { // a link names a created record
			return err
		}
		if ino, ok := im.links[fileID{st.Dev, st.Ino}]; ok { // a hard link of a file imported already
			if _, err := im.Store.Namespace().Link(ino, parent, name); err != nil {
				return fmt.Errorf("import %s: %w", src, err)
			}
			return nil
		}
	}
	if im.AfterStat != nil {
		im.AfterStat(src)
	}
	fd, err := unix.Openat(dirfd, rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	f := os.NewFile(uintptr(fd), src)
	defer f.Close()
	var opened unix.Stat_t
	if err := unix.Fstat(fd, &opened); err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	if opened.Dev != st.Dev || opened.Ino != st.Ino {
		return fmt.Errorf("import %s: replaced by another file while importing", src)
	}
	rec := recordFrom(&opened)
	if rec.Xattrs, err = userXattrs(fd); err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	if opened.Mode&unix.S_IFMT == unix.S_IFREG {
		c, release, err := im.Store.Ingest(&barReader{f, im.Bar})
		if err != nil {
			return fmt.Errorf("import %s: %w", src, err)
		}
		rec.Content = *c
		im.Files++
		file := importedFile{src: src, parent: parent, name: name, rec: rec, release: release}
		if opened.Nlink > 1 {
			file.id = fileID{opened.Dev, opened.Ino}
		}
		im.batch = append(im.batch, file)
		if im.batchBytes += c.Size; len(im.batch) >= importBatchFiles || im.batchBytes >= importBatchBytes {
			return im.Flush()
		}
		return nil
	}
	dir, err := im.Store.Namespace().Create(parent, name, rec)
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	for _, e := range entries {
		if err := im.copyAt(fd, e.Name(), filepath.Join(src, e.Name()), dir.Ino, e.Name()); err != nil {
			return err
		}
	}
	if err := im.Flush(); err != nil {
		return err
	}
	// Its times again: each entry made in it moved them.
	_, err = im.Store.Namespace().Update(dir.Ino, func(in *meta.Inode) error {
		in.Atime, in.Mtime = rec.Atime, rec.Mtime
		return nil
	})
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	return nil
}

// fileID names a local file whatever its path.
type fileID struct{ dev, ino uint64 }

func (im *Importer) create(src string, parent uint64, name string, rec meta.Inode) error {
	if _, err := im.Store.Namespace().Create(parent, name, rec); err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	return nil
}

func readlinkAt(dirfd int, rel string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, rel, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

type barReader struct {
	f   *os.File
	bar interface{ Add64(int64) error }
}

func (r *barReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	if berr := r.bar.Add64(int64(n)); berr != nil && err == nil {
		err = berr // the import is stopped
	}
	return n, err
}

// userXattrs reads the user.* extended attributes of open file fd, which
// the store keeps as the mount does (see meta.MaxXattrSize).
func userXattrs(fd int) (map[string][]byte, error) {
	n, err := unix.Flistxattr(fd, nil) // the list's size: 0 for most files
	if errors.Is(err, unix.ENOTSUP) || err == nil && n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list extended attributes: %w", err)
	}
	buf := make([]byte, min(n, meta.MaxXattrSize))
	if n, err = unix.Flistxattr(fd, buf); err != nil {
		return nil, fmt.Errorf("list extended attributes: %w", err) // ERANGE: it grew meanwhile, or is over the bound
	}
	var out map[string][]byte
	size := 0
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, meta.MaxXattrSize)
		m, err := unix.Fgetxattr(fd, name, v)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("extended attribute %s: %w", name, err)
		}
		if size += len(name) + m; size > meta.MaxXattrSize {
			return nil, fmt.Errorf("extended attributes of more than %d bytes", meta.MaxXattrSize)
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[name] = v[:m:m]
	}
	return out, nil
}

// recordFrom builds an inode template from a local file's metadata.
func recordFrom(st *unix.Stat_t) meta.Inode {
	return meta.Inode{Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Atime: st.Atim.Nano(), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}
