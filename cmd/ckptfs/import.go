package main

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/ckptfs/ckptfs/cache"
	"github.com/spf13/cobra"
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
			var total int64
			if err := filepath.WalkDir(args[0], func(p string, d fs.DirEntry, err error) error {
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
				return fmt.Errorf("import %s: %w", args[0], err)
			}
			return a.withStore(cache.Options{}, func(store *cache.Store) error {
				parent, err := store.MkdirAll(path.Dir(name))
				if err != nil {
					return err
				}
				bar := newProgress(total, "import "+name)
				imp := &importer{store: store, bar: bar}
				if err := imp.copy(args[0], parent, path.Base(name)); err != nil {
					return err
				}
				bar.Finish()
				if err := store.Sync(); err != nil {
					return err
				}
				fmt.Printf("imported %s as %s: %d files\n", args[0], name, imp.files)
				return nil
			})
		},
	}
}

type importer struct {
	store *cache.Store
	bar   interface{ Add64(int64) error }
	files int
}

// copy stores local path src as name in folder parent, recursively.
func (im *importer) copy(src string, parent uint64, name string) error {
	info, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	rec := recordFrom(info)
	switch {
	case info.IsDir():
		dir, err := im.store.Create(parent, name, rec)
		if err != nil {
			return fmt.Errorf("import %s: %w", src, err)
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		for _, e := range entries {
			if err := im.copy(filepath.Join(src, e.Name()), dir.Ino, e.Name()); err != nil {
				return err
			}
		}
		return nil
	case info.Mode()&fs.ModeSymlink != 0:
		if rec.Target, err = os.Readlink(src); err != nil {
			return fmt.Errorf("import: %w", err)
		}
	case info.Mode().IsRegular():
		f, err := os.Open(src)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		c, err := im.store.Ingest(&barReader{f, im.bar})
		if err != nil {
			return fmt.Errorf("import %s: %w", src, err)
		}
		rec.Content = *c
		im.files++
	default:
		return fmt.Errorf("import %s: not a regular file, folder or symlink", src)
	}
	if _, err := im.store.Create(parent, name, rec); err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	return nil
}

type barReader struct {
	f   *os.File
	bar interface{ Add64(int64) error }
}

func (r *barReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.bar.Add64(int64(n))
	return n, err
}

// recordFrom builds an inode template from a local file's metadata.
func recordFrom(info os.FileInfo) cache.Inode {
	rec := cache.Inode{Mode: uint32(info.Mode().Perm())}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		rec.Mode = st.Mode
		rec.Uid, rec.Gid = st.Uid, st.Gid
		rec.Atime = st.Atim.Nano()
		rec.Ctime = st.Ctim.Nano()
	}
	rec.Mtime = info.ModTime().UnixNano()
	return rec
}
