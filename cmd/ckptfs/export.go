package main

import (
	"errors"
	"fmt"
	"os"
	"path"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/cmd/ckptfs/localfs"
	"github.com/ckptfs/ckptfs/layout/view"
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
	ex, err := localfs.NewExporter(store, dst, func(total int64) localfs.Progress { return a.newProgress(total, "export") })
	if err != nil {
		return err
	}
	defer ex.Close()
	if v != nil {
		return ex.View(v)
	}
	return ex.Tree(in)
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
