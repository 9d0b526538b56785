package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func (a *app) importCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "import SRC NAME",
		Short: "Copy a local checkpoint folder (or file) into the store as NAME",
		Long: `Copy SRC, a folder or a single file on local disk, into the store as NAME
(which may be nested, like run1/model). Files keep their modes and times.
The same as 'cp -r SRC MOUNT/NAME', without a mount.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := cleanName(args[1])
			if err != nil {
				return err
			}
			if _, err := os.Lstat(a.localPath(args[0])); err != nil {
				return fmt.Errorf("import %s: %w", args[0], err) // before the store is opened, or made
			}
			return a.withStore(store.Options{}, func(store *store.Store) error {
				// The walk here, not before: against a mount this runs in its daemon.
				src := a.localPath(args[0])
				var total int64
				if err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					if d.Type().IsRegular() {
						info, err := d.Info()
						if err != nil {
							return err
						}
						total += info.Size()
					}
					return nil
				}); err != nil {
					return fmt.Errorf("import %s: %w", src, err)
				}
				parent, err := store.Namespace().MkdirAll(path.Dir(name))
				if err != nil {
					return err
				}
				bar := a.newProgress(total, "import "+name)
				imp := &importer{store: store, bar: bar}
				err = imp.copy(src, parent, path.Base(name))
				if ferr := imp.flush(); err == nil {
					err = ferr
				}
				if err != nil {
					return err
				}
				bar.Finish()
				if err := store.Sync(); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "imported %s as %s: %d files\n", args[0], name, imp.files)
				return nil
			})
		},
	}
}

type importer struct {
	store *store.Store
	bar   interface{ Add64(int64) error }
	files int
	links map[fileID]uint64 // files with hard links imported so far: where they went
	// afterStat, if set, runs between an entry's stat and its open: tests
	// swap the entry there.
	afterStat func(src string)
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

// flush makes the batch's chunks durable and then creates its records.
func (im *importer) flush() error {
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
	if err := im.store.SyncChunks(); err != nil {
		return err
	}
	for _, f := range batch {
		in, err := im.store.Namespace().Create(f.parent, f.name, f.rec)
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

// copy stores local path src as name in folder parent, recursively.
func (im *importer) copy(src string, parent uint64, name string) error {
	return im.copyAt(unix.AT_FDCWD, src, src, parent, name)
}

// copyAt stores entry rel of the folder open as dirfd (src in messages).
// Each entry is opened relative to its folder without following a
// symlink, and its metadata is read from the opened file: a path swapped
// for a symlink meanwhile fails the import instead of storing a file the
// user could not read under the user's name and mode.
func (im *importer) copyAt(dirfd int, rel, src string, parent uint64, name string) error {
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
		if err := im.flush(); err != nil { // a link names a created record
			return err
		}
		if ino, ok := im.links[fileID{st.Dev, st.Ino}]; ok { // a hard link of a file imported already
			if _, err := im.store.Namespace().Link(ino, parent, name); err != nil {
				return fmt.Errorf("import %s: %w", src, err)
			}
			return nil
		}
	}
	if im.afterStat != nil {
		im.afterStat(src)
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
		c, release, err := im.store.Ingest(&barReader{f, im.bar})
		if err != nil {
			return fmt.Errorf("import %s: %w", src, err)
		}
		rec.Content = *c
		im.files++
		file := importedFile{src: src, parent: parent, name: name, rec: rec, release: release}
		if opened.Nlink > 1 {
			file.id = fileID{opened.Dev, opened.Ino}
		}
		im.batch = append(im.batch, file)
		if im.batchBytes += c.Size; len(im.batch) >= importBatchFiles || im.batchBytes >= importBatchBytes {
			return im.flush()
		}
		return nil
	}
	dir, err := im.store.Namespace().Create(parent, name, rec)
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
	if err := im.flush(); err != nil {
		return err
	}
	// Its times again: each entry made in it moved them.
	_, err = im.store.Namespace().Update(dir.Ino, func(in *meta.Inode) error {
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

func (im *importer) create(src string, parent uint64, name string, rec meta.Inode) error {
	if _, err := im.store.Namespace().Create(parent, name, rec); err != nil {
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
