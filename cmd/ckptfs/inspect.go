package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"syscall"
	"text/tabwriter"

	"github.com/ckptfs/ckptfs/cache"
	"github.com/ckptfs/ckptfs/cache/check"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

func (a *app) lsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the checkpoints in the store and their views",
		Long: `List the top of the store: each checkpoint, its files, size and views.
--json prints a JSON array of {name, type, files, logical_bytes, views}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cache.Options{}, func(store *cache.Store) error {
				rows, err := list(store)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(rows)
				}
				w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tFILES\tSIZE\tVIEWS")
				for _, r := range rows {
					views := "-"
					if len(r.Views) > 0 {
						views = r.Views[0] + " " + r.Views[1] + "[=SIZE]"
					}
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", r.Name, r.Files, humanize.IBytes(uint64(r.LogicalBytes)), views)
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// checkpointRow is one checkpoint in 'ckptfs ls'.
type checkpointRow struct {
	Name         string   `json:"name"`
	Type         string   `json:"type"` // dir, file or symlink
	Files        int64    `json:"files"`
	LogicalBytes int64    `json:"logical_bytes"`
	Views        []string `json:"views"` // NAME@single, NAME@shards
}

// list reads the top of the store: each checkpoint, its size and views.
func list(store *cache.Store) ([]checkpointRow, error) {
	entries, err := store.ReadDir(meta.RootIno)
	if err != nil {
		return nil, err
	}
	rows := []checkpointRow{}
	for _, e := range entries {
		st, err := store.Stats(e.Ino)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name, err)
		}
		r := checkpointRow{Name: e.Name, Type: "file", Files: st.Files, LogicalBytes: st.Logical, Views: []string{}}
		switch e.Mode {
		case syscall.S_IFDIR:
			r.Type = "dir"
			if children, err := store.ReadDir(e.Ino); err == nil && views.HasWeights(children) {
				r.Views = []string{e.Name + "@single", e.Name + "@shards"}
			}
		case syscall.S_IFLNK:
			r.Type = "symlink"
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// printJSON writes v to stdout as indented JSON.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) statCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat [NAME]",
		Short: "Show logical, deduplicated and stored bytes of a checkpoint or the store",
		Long: `Show the files and the logical (as written), unique (after deduplication) and
stored (after compression) bytes of checkpoint NAME, or of the whole store.
--json prints {name, store, files, logical_bytes, unique_bytes, stored_bytes,
dedup_ratio, compression_ratio}.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cache.Options{}, func(store *cache.Store) error {
				ino, name := meta.RootIno, ""
				if len(args) == 1 {
					var err error
					if name, err = cleanName(args[0]); err != nil {
						return err
					}
					in, err := store.Resolve(name)
					if err != nil {
						return err
					}
					ino = in.Ino
				}
				st, err := store.Stats(ino)
				if err != nil {
					return err
				}
				r := statReport{Name: name, Store: a.storeDir, Files: st.Files, LogicalBytes: st.Logical,
					UniqueBytes: st.Unique, StoredBytes: st.Stored,
					DedupRatio: ratio(st.Unique, st.Logical), CompressionRatio: ratio(st.Stored, st.Unique)}
				if asJSON {
					return printJSON(r)
				}
				r.print()
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// statReport is what 'ckptfs stat' shows.
type statReport struct {
	Name             string  `json:"name"` // empty for the whole store
	Store            string  `json:"store"`
	Files            int64   `json:"files"`
	LogicalBytes     int64   `json:"logical_bytes"`
	UniqueBytes      int64   `json:"unique_bytes"`
	StoredBytes      int64   `json:"stored_bytes"`
	DedupRatio       float64 `json:"dedup_ratio"`       // unique / logical
	CompressionRatio float64 `json:"compression_ratio"` // stored / unique
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 1
	}
	return float64(a) / float64(b)
}

func (r *statReport) print() {
	label := r.Name
	if label == "" {
		label = "store " + r.Store
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%s\n", label)
	fmt.Fprintf(w, "files\t%d\n", r.Files)
	fmt.Fprintf(w, "logical bytes\t%d\t(%s)\n", r.LogicalBytes, humanize.IBytes(uint64(r.LogicalBytes)))
	fmt.Fprintf(w, "unique bytes\t%d\t(%s)\tdedup ratio %.3f\n", r.UniqueBytes, humanize.IBytes(uint64(r.UniqueBytes)), r.DedupRatio)
	fmt.Fprintf(w, "stored bytes\t%d\t(%s)\tcompression ratio %.3f\n", r.StoredBytes, humanize.IBytes(uint64(r.StoredBytes)), r.CompressionRatio)
	fmt.Fprintf(w, "stored / logical\t%.3f\n", ratio(r.StoredBytes, r.LogicalBytes))
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
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fsck",
		Short: "Re-read and verify every chunk and manifest",
		Long: `Trust nothing: walk the namespace, decode every inode, read and verify every
stored chunk against its hash, and check every chunk a file references. Exits
non-zero when it finds a problem. --json prints {files, chunks, bytes,
problems}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cache.Options{AllowDamagedTables: true}, func(store *cache.Store) error {
				rep, err := check.Store(store)
				if err != nil {
					return err
				}
				if asJSON {
					out := fsckJSON{Files: rep.Files, Chunks: rep.Chunks, Bytes: rep.Bytes, InBucket: rep.InBucket, Problems: append([]string{}, rep.Problems...)}
					if err := printJSON(out); err != nil {
						return err
					}
				} else {
					for _, p := range rep.Problems {
						fmt.Println("problem:", p)
					}
					if rep.InBucket > 0 {
						fmt.Printf("%d chunks are held by the bucket only, and verified when fetched\n", rep.InBucket)
					}
					fmt.Printf("checked %d files, %d chunks (%s): %d problems\n",
						rep.Files, rep.Chunks, humanize.IBytes(uint64(rep.Bytes)), len(rep.Problems))
				}
				if len(rep.Problems) > 0 {
					return fmt.Errorf("fsck found %d problems", len(rep.Problems))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// fsckJSON is 'ckptfs fsck --json'.
type fsckJSON struct {
	Files    int64    `json:"files"`
	Chunks   int64    `json:"chunks"`
	Bytes    int64    `json:"bytes"` // raw bytes of the chunks verified
	InBucket int64    `json:"in_bucket"`
	Problems []string `json:"problems"`
}
