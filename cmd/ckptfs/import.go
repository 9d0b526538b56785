package main

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cmd/ckptfs/localfs"
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
				imp := &localfs.Importer{Store: store, Bar: bar}
				err = imp.Copy(src, parent, path.Base(name))
				if ferr := imp.Flush(); err == nil {
					err = ferr
				}
				if err != nil {
					return err
				}
				bar.Finish()
				if err := store.Sync(); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "imported %s as %s: %d files\n", args[0], name, imp.Files)
				return nil
			})
		},
	}
}
