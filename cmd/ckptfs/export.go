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

	"github.com/ckptfs/ckptfs/cache"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/layout"
	"github.com/spf13/cobra"
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
			return a.withStore(cache.Options{}, func(store *cache.Store) error { return a.export(store, name, dst) })
		},
	}
}

// export writes NAME as written, or the view NAME names, to dst.
func (a *app) export(store *cache.Store, name, dst string) error {
	ex := &exporter{store: store, app: a}
	if in, err := store.Resolve(name); err == nil {
		return ex.tree(in, dst)
	} else if !errors.Is(err, syscall.ENOENT) {
		return err
	}
	base, spec, ok, err := layout.ParseViewName(path.Base(name))
	if err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	if !ok {
		return fmt.Errorf("export: %s: no such checkpoint", name)
	}
	dirPath := path.Join(path.Dir(name), base)
	dir, err := store.Resolve(dirPath)
	if err != nil {
		return fmt.Errorf("export: %s: no such checkpoint", dirPath)
	}
	v, err := views.Build(store, a.log, dir.Ino, dirPath, spec)
	if errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("export: %s has no safetensors weights to view", dirPath)
	}
	if err != nil {
		return err
	}
	return ex.view(v, dst)
}

type exporter struct {
	store  *cache.Store
	app    *app              // for progress
	linked map[uint64]string // files with hard links written so far: where
}

// tree writes a stored file, symlink or folder to dst.
func (ex *exporter) tree(in *meta.Inode, dst string) error {
	var total int64
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if err := ex.store.Walk(in.Ino, func(_ string, c *meta.Inode) error { total += c.Content.Size; return nil }); err != nil {
			return err
		}
	}
	total += in.Content.Size
	bar := ex.app.newProgress(total, "export")
	defer bar.Finish()
	if err := ex.writeNode(in, dst, bar); err != nil {
		return err
	}
	if in.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil
	}
	var dirs []struct {
		p  string
		in *meta.Inode
	}
	err := ex.store.Walk(in.Ino, func(rel string, c *meta.Inode) error {
		p := filepath.Join(dst, filepath.FromSlash(rel))
		if c.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			dirs = append(dirs, struct {
				p  string
				in *meta.Inode
			}{p, c})
		}
		return ex.writeNode(c, p, bar)
	})
	if err != nil {
		return err
	}
	// Folder modes and times last: writing into a folder changes its mtime,
	// and a read-only folder takes no entries.
	for i := len(dirs) - 1; i >= 0; i-- {
		setModeAndTimes(dirs[i].p, dirs[i].in)
	}
	setModeAndTimes(dst, in)
	return nil
}

func (ex *exporter) writeNode(in *meta.Inode, p string, bar io.Writer) error {
	switch in.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		if err := os.Mkdir(p, os.FileMode(in.Mode&0o777)|0o700); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return setXattrs(p, in)
	case syscall.S_IFLNK:
		if err := os.Symlink(in.Target, p); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return nil
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		if err := syscall.Mknod(p, in.Mode, int(in.Rdev)); err != nil {
			return fmt.Errorf("export %s: %w", p, err)
		}
		setModeAndTimes(p, in)
		return nil
	}
	if in.Links() > 1 {
		if first, ok := ex.linked[in.Ino]; ok {
			if err := os.Link(first, p); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			return nil
		}
		if ex.linked == nil {
			ex.linked = map[uint64]string{}
		}
		ex.linked[in.Ino] = p
	}
	r := ex.store.NewReader(p, &in.Content)
	return writeFile(p, in, io.NewSectionReader(r, 0, r.Size()), bar)
}

// view writes every file of a view to the new folder dst.
func (ex *exporter) view(v *views.View, dst string) error {
	var total int64
	for _, f := range v.Files {
		total += f.Size
	}
	for _, x := range v.Extra {
		total += x.Inode.Content.Size
	}
	bar := ex.app.newProgress(total, "export")
	defer bar.Finish()
	if err := os.Mkdir(dst, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	for i, f := range v.Files {
		rec := &meta.Inode{Mode: syscall.S_IFREG | 0o644, Mtime: time.Now().UnixNano()}
		if err := writeFile(filepath.Join(dst, f.Name), rec, io.NewSectionReader(viewFile{v, i}, 0, f.Size), bar); err != nil {
			return err
		}
	}
	for _, x := range v.Extra {
		if err := ex.writeNode(x.Inode, filepath.Join(dst, x.Name), bar); err != nil {
			return err
		}
	}
	return nil
}

type viewFile struct {
	v *views.View
	i int
}

func (f viewFile) ReadAt(p []byte, off int64) (int, error) { return f.v.ReadAt(f.i, p, off) }

// writeFile copies r into a new file p with the record's mode and times.
func writeFile(p string, in *meta.Inode, r io.Reader, bar io.Writer) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(in.Mode&0o777))
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := io.CopyBuffer(io.MultiWriter(f, bar), r, make([]byte, 4<<20)); err != nil {
		f.Close()
		return fmt.Errorf("export %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export %s: %w", p, err)
	}
	if err := setXattrs(p, in); err != nil {
		return err
	}
	setModeAndTimes(p, in) // last: a read-only mode would refuse the attributes
	return nil
}

// setXattrs gives p the extended attributes of its record; a local file
// system without them is no failure, as for cp -a.
func setXattrs(p string, in *meta.Inode) error {
	for name, v := range in.Xattrs {
		err := syscall.Setxattr(p, name, v, 0)
		if errors.Is(err, syscall.ENOTSUP) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("export %s: extended attribute %s: %w", p, name, err)
		}
	}
	return nil
}

// setModeAndTimes gives p its record's permission bits, whatever the
// umask, and times, as cp -a does.
func setModeAndTimes(p string, in *meta.Inode) {
	syscall.Chmod(p, in.Mode&0o1777)
	if in.Mtime != 0 {
		os.Chtimes(p, time.Unix(0, in.Atime), time.Unix(0, in.Mtime))
	}
}
