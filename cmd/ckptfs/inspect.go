package main

import (
	"fmt"
	"os"
	"path"
	"syscall"
	"text/tabwriter"

	"github.com/ckptfs/ckptfs/cache"
	ckfs "github.com/ckptfs/ckptfs/fs"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

func (a *app) lsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the checkpoints in the store and their views",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cache.Options{}, list)
		},
	}
}

// list prints the top of the store: each checkpoint, its size and views.
func list(store *cache.Store) error {
	entries, err := store.ReadDir(cache.RootIno)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tFILES\tSIZE\tVIEWS")
	for _, e := range entries {
		st, err := store.Stats(e.Ino)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name, err)
		}
		views := "-"
		if e.Mode == syscall.S_IFDIR {
			if children, err := store.ReadDir(e.Ino); err == nil && ckfs.HasWeights(children) {
				views = e.Name + "@single " + e.Name + "@shards[=SIZE]"
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", e.Name, st.Files, humanize.IBytes(uint64(st.Logical)), views)
	}
	return w.Flush()
}

func (a *app) statCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stat [NAME]",
		Short: "Show logical, deduplicated and stored bytes of a checkpoint or the store",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cache.Options{}, func(store *cache.Store) error {
				ino, label := cache.RootIno, "store "+a.storeDir
				if len(args) == 1 {
					name, err := cleanName(args[0])
					if err != nil {
						return err
					}
					in, err := store.Resolve(name)
					if err != nil {
						return err
					}
					ino, label = in.Ino, name
				}
				st, err := store.Stats(ino)
				if err != nil {
					return err
				}
				printStats(label, st)
				return nil
			})
		},
	}
}

func printStats(label string, st *cache.Stats) {
	ratio := func(a, b int64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", float64(a)/float64(b))
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%s\n", label)
	fmt.Fprintf(w, "files\t%d\n", st.Files)
	fmt.Fprintf(w, "logical bytes\t%d\t(%s)\n", st.Logical, humanize.IBytes(uint64(st.Logical)))
	fmt.Fprintf(w, "unique bytes\t%d\t(%s)\tdedup ratio %s\n", st.Unique, humanize.IBytes(uint64(st.Unique)), ratio(st.Unique, st.Logical))
	fmt.Fprintf(w, "stored bytes\t%d\t(%s)\tcompression ratio %s\n", st.Stored, humanize.IBytes(uint64(st.Stored)), ratio(st.Stored, st.Unique))
	fmt.Fprintf(w, "stored / logical\t%s\n", ratio(st.Stored, st.Logical))
	w.Flush()
}

func (a *app) rmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a checkpoint (its chunks are freed by gc)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := cleanName(args[0])
			if err != nil {
				return err
			}
			return a.withStore(cache.Options{}, func(store *cache.Store) error {
				parent, err := store.Resolve(path.Dir(name))
				if err != nil {
					return err
				}
				if err := store.RemoveAll(parent.Ino, path.Base(name)); err != nil {
					return fmt.Errorf("rm %s: %w", name, err)
				}
				fmt.Printf("removed %s; run 'ckptfs gc' to free its space\n", name)
				return nil
			})
		},
	}
}

func (a *app) gcCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Free chunks no file references and compact the store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cache.Options{}, func(store *cache.Store) error {
				res, err := store.GC()
				if err != nil {
					return err
				}
				fmt.Printf("freed %d chunks (%s stored), %d orphan inodes; removed %d packs (%d rewritten), %s of disk freed; %d value-log files rewritten\n",
					res.Chunks, humanize.IBytes(uint64(res.ChunkBytes)), res.Inodes,
					res.PacksRemoved, res.PacksRewritten, humanize.IBytes(uint64(res.PackBytesFreed)), res.ValueLogRewrites)
				return nil
			})
		},
	}
}

func (a *app) fsckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fsck",
		Short: "Re-read and verify every chunk and manifest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cache.Options{AllowDamagedTables: true}, func(store *cache.Store) error {
				rep, err := store.Fsck()
				if err != nil {
					return err
				}
				for _, p := range rep.Problems {
					fmt.Println("problem:", p)
				}
				fmt.Printf("checked %d files, %d chunks (%s): %d problems\n",
					rep.Files, rep.Chunks, humanize.IBytes(uint64(rep.Bytes)), len(rep.Problems))
				if len(rep.Problems) > 0 {
					return fmt.Errorf("fsck found %d problems", len(rep.Problems))
				}
				return nil
			})
		},
	}
}
