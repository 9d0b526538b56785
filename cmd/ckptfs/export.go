package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/layout/view"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func (a *app) exportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "export NAME[@single|@shards[=SIZE]] DST",
		Short: "Write a checkpoint, or a view of it, to a local folder",
		Long: `Write NAME as written, or its view NAME@single / NAME@shards[=SIZE], to DST on
local disk, with the same bytes the mount shows, without a mount. NAME may be
nested (run1/model@single). DST must not exist yet.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := cleanName(args[0])
			if err != nil {
				return err
			}
			dst := a.localPath(args[1])
			if _, err := os.Lstat(dst); err == nil {
				return fmt.Errorf("export: %s already exists", dst)
			}
			return a.withStore(store.Options{}, func(store *store.Store) error { return a.export(store, name, dst) })
		},
	}
}

// export writes NAME as written, or the view NAME names, to dst.
func (a *app) export(store *store.Store, name, dst string) error {
	in, err := store.Namespace().Resolve(name)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return err
	}
	var v *views.View
	if err != nil {
		if v, err = a.planExport(store, name); err != nil {
			return err
		}
	}
	ex, err := newExporter(store, a, dst)
	if err != nil {
		return err
	}
	defer ex.close()
	if v != nil {
		return ex.view(v)
	}
	return ex.tree(in)
}

// planExport plans the view NAME names.
func (a *app) planExport(store *store.Store, name string) (*views.View, error) {
	base, spec, ok, err := view.ParseName(path.Base(name))
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", name, err)
	}
	if !ok {
		return nil, fmt.Errorf("export: %s: no such checkpoint", name)
	}
	dirPath := path.Join(path.Dir(name), base)
	dir, err := store.Namespace().Resolve(dirPath)
	if err != nil {
		return nil, fmt.Errorf("export: %s: no such checkpoint", dirPath)
	}
	v, err := views.Build(store, a.writes, a.log, dir.Ino, dirPath, spec)
	if errors.Is(err, syscall.ENOENT) {
		return nil, fmt.Errorf("export: %s has no safetensors weights to view", dirPath)
	}
	return v, err
}

// exporter writes a tree or a view as dst. dst's folder is opened once by
// its path, the user's; everything below it is made relative to folders
// held open (mkdirat, openat2 without symlinks or "..", symlinkat...) and
// given its attributes through its own descriptor, and the folders made
// stay 0700 until the end: another user who may write into dst's folder
// (a shared /tmp) cannot make the export write, chmod or link anything
// elsewhere by putting a symlink in its way.
type exporter struct {
	store  *store.Store
	app    *app              // for progress
	dst    string            // for messages
	parent int               // dst's folder
	name   string            // dst's name in it
	top    int               // dst once made, when it is a folder; -1 before
	linked map[uint64]string // files with hard links written so far: where, below top
}

func newExporter(store *store.Store, a *app, dst string) (*exporter, error) {
	dst = filepath.Clean(dst)
	parent, err := unix.Open(filepath.Dir(dst), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("export: %w", &os.PathError{Op: "open", Path: filepath.Dir(dst), Err: err})
	}
	return &exporter{store: store, app: a, dst: dst, parent: parent, name: filepath.Base(dst), top: -1}, nil
}

func (ex *exporter) close() {
	unix.Close(ex.parent)
	if ex.top >= 0 {
		unix.Close(ex.top)
	}
}

// fail wraps err with the path below dst it concerns.
func (ex *exporter) fail(rel string, err error) error {
	return fmt.Errorf("export %s: %w", filepath.Join(ex.dst, filepath.FromSlash(rel)), err)
}

// makeTop makes dst a folder only this process may enter, and holds it
// open: a folder another user put in its place meanwhile is refused.
func (ex *exporter) makeTop() error {
	if err := unix.Mkdirat(ex.parent, ex.name, 0o700); err != nil {
		return ex.fail("", err)
	}
	fd, err := openBeneath(ex.parent, ex.name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return ex.fail("", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return ex.fail("", err)
	}
	if st.Uid != uint32(os.Geteuid()) {
		unix.Close(fd)
		return ex.fail("", fmt.Errorf("replaced by uid %d's folder while being made", st.Uid))
	}
	ex.top = fd
	return nil
}

// tree writes a stored file, symlink or folder as dst.
func (ex *exporter) tree(in *meta.Inode) error {
	var total int64
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if err := ex.store.Namespace().Walk(in.Ino, func(_ string, c *meta.Inode) error { total += c.Content.Size; return nil }); err != nil {
			return err
		}
	}
	total += in.Content.Size
	bar := ex.app.newProgress(total, "export")
	defer bar.Finish()
	if in.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return ex.writeNode(ex.parent, ex.name, "", in, bar)
	}
	if err := ex.makeTop(); err != nil {
		return err
	}
	if err := setXattrs(ex.top, in); err != nil {
		return ex.fail("", err)
	}
	type dir struct {
		rel string
		in  *meta.Inode
	}
	var dirs []dir
	err := ex.store.Namespace().Walk(in.Ino, func(rel string, c *meta.Inode) error {
		if c.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			dirs = append(dirs, dir{rel, c})
		}
		parent, name, err := parentBeneath(ex.top, rel)
		if err != nil {
			return ex.fail(rel, err)
		}
		defer unix.Close(parent)
		return ex.writeNode(parent, name, rel, c, bar)
	})
	if err != nil {
		return err
	}
	// Folder modes and times last, deepest first: writing into a folder
	// changes its mtime, a read-only folder takes no entries, and one
	// others may write into must take none from this export.
	for i := len(dirs) - 1; i >= 0; i-- {
		fd, err := openBeneath(ex.top, dirs[i].rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err == nil {
			err = setModeAndTimes(fd, dirs[i].in)
			unix.Close(fd)
		}
		if err != nil {
			return ex.fail(dirs[i].rel, err)
		}
	}
	if err := setModeAndTimes(ex.top, in); err != nil {
		return ex.fail("", err)
	}
	return nil
}

// writeNode makes name in the folder dirfd from its record; rel is its
// path below dst, for messages and hard links.
func (ex *exporter) writeNode(dirfd int, name, rel string, in *meta.Inode, bar io.Writer) error {
	switch in.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		if err := unix.Mkdirat(dirfd, name, 0o700); err != nil {
			return ex.fail(rel, err)
		}
		fd, err := openBeneath(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return ex.fail(rel, err)
		}
		defer unix.Close(fd)
		if err := setXattrs(fd, in); err != nil {
			return ex.fail(rel, err)
		}
		return nil
	case syscall.S_IFLNK:
		if err := unix.Symlinkat(in.Target, dirfd, name); err != nil {
			return ex.fail(rel, err)
		}
		return nil
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		if err := unix.Mknodat(dirfd, name, in.Mode, int(in.Rdev)); err != nil {
			return ex.fail(rel, err)
		}
		fd, err := openBeneath(dirfd, name, unix.O_PATH, 0) // never opened for I/O
		if err == nil {
			err = setModeAndTimes(fd, in)
			unix.Close(fd)
		}
		if err != nil {
			return ex.fail(rel, err)
		}
		return nil
	}
	if in.Links() > 1 {
		if first, ok := ex.linked[in.Ino]; ok {
			return ex.link(first, dirfd, name, rel)
		}
		if ex.linked == nil {
			ex.linked = map[uint64]string{}
		}
		ex.linked[in.Ino] = rel
	}
	r := ex.store.NewReader(path.Join(ex.dst, rel), &in.Content)
	return ex.writeFile(dirfd, name, rel, in, io.NewSectionReader(r, 0, r.Size()), bar)
}

// link makes name in dirfd a hard link of first, a file written below top.
func (ex *exporter) link(first string, dirfd int, name, rel string) error {
	parent, firstName, err := parentBeneath(ex.top, first)
	if err != nil {
		return ex.fail(first, err)
	}
	defer unix.Close(parent)
	if err := unix.Linkat(parent, firstName, dirfd, name, 0); err != nil {
		return ex.fail(rel, err)
	}
	return nil
}

// view writes every file of a view into the new folder dst.
func (ex *exporter) view(v *views.View) error {
	var total int64
	for _, f := range v.Files {
		total += f.Size
	}
	for _, x := range v.Extra {
		total += x.Inode.Content.Size
	}
	bar := ex.app.newProgress(total, "export")
	defer bar.Finish()
	if err := ex.makeTop(); err != nil {
		return err
	}
	t := time.Now().UnixNano()
	for i, f := range v.Files {
		rec := &meta.Inode{Mode: syscall.S_IFREG | 0o644, Atime: t, Mtime: t}
		if err := ex.writeFile(ex.top, f.Name, f.Name, rec, io.NewSectionReader(viewFile{v, i}, 0, f.Size), bar); err != nil {
			return err
		}
	}
	for _, x := range v.Extra {
		if err := ex.writeNode(ex.top, x.Name, x.Name, x.Inode, bar); err != nil {
			return err
		}
	}
	if err := setModeAndTimes(ex.top, &meta.Inode{Mode: syscall.S_IFDIR | 0o755, Atime: t, Mtime: t}); err != nil {
		return ex.fail("", err)
	}
	return nil
}

type viewFile struct {
	v *views.View
	i int
}

func (f viewFile) ReadAt(p []byte, off int64) (int, error) { return f.v.ReadAt(f.i, p, off) }

// writeFile makes name in the folder dirfd a new file of r's bytes, with
// the record's extended attributes, mode and times; rel is its path below
// dst, for messages.
func (ex *exporter) writeFile(dirfd int, name, rel string, in *meta.Inode, r io.Reader, bar io.Writer) error {
	fd, err := openBeneath(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, in.Mode&0o777)
	if err != nil {
		return ex.fail(rel, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if _, err := io.CopyBuffer(io.MultiWriter(f, bar), r, make([]byte, 4<<20)); err != nil {
		return ex.fail(rel, err)
	}
	if err := setXattrs(fd, in); err != nil {
		return ex.fail(rel, err)
	}
	if err := setModeAndTimes(fd, in); err != nil { // last: a read-only mode would refuse the attributes
		return ex.fail(rel, err)
	}
	if err := f.Close(); err != nil {
		return ex.fail(rel, err)
	}
	return nil
}

// setXattrs gives open file fd the extended attributes of its record; a
// local file system without them is no failure, as for cp -a.
func setXattrs(fd int, in *meta.Inode) error {
	for name, v := range in.Xattrs {
		err := unix.Fsetxattr(fd, name, v, 0)
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("extended attribute %s: %w", name, err)
		}
	}
	return nil
}

// setModeAndTimes gives open file fd its record's permission bits,
// whatever the umask, and times, as cp -a does. An O_PATH descriptor (a
// FIFO, socket or device node, never opened for I/O) takes its mode
// through /proc/self/fd, which names that very inode.
func setModeAndTimes(fd int, in *meta.Inode) error {
	mode := in.Mode & 0o1777
	err := unix.Fchmod(fd, mode)
	if errors.Is(err, unix.EBADF) {
		err = unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), mode)
	}
	if err != nil || in.Mtime == 0 {
		return err
	}
	return unix.UtimesNanoAt(fd, "", []unix.Timespec{unix.NsecToTimespec(in.Atime), unix.NsecToTimespec(in.Mtime)}, unix.AT_EMPTY_PATH)
}
