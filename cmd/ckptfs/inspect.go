package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/ckptfs/ckptfs/cache/fsck"
	"github.com/ckptfs/ckptfs/cache/hot"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/reclaim"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/usage"
	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/cmd/ckptfs/localfs"
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
			print := func(rows []checkpointRow) error {
				if asJSON {
					return a.printJSON(rows)
				}
				w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tFILES\tSIZE\tVIEWS")
				for _, r := range rows {
					views := "-"
					if len(r.Views) > 0 {
						views = r.Views[0] + " " + r.Views[1] + "[=SIZE]"
					}
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", r.Name, r.Files, humanize.IBytes(uint64(r.LogicalBytes)), views)
				}
				return w.Flush()
			}
			err := a.withStore(store.Options{ReadOnly: true}, func(store *store.Store) error {
				rows, err := list(store)
				if err != nil {
					return err
				}
				return print(rows)
			})
			if errors.Is(err, errNoStore) { // nothing saved yet: nothing to list
				return print([]checkpointRow{})
			}
			return err
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
// inspected is what ls, stat and gc read of a store, and what gc asks of
// it.
type inspected interface {
	Namespace() *meta.Namespace
	Dir() string
	CheckpointTotals(ino uint64) (usage.Totals, error)
	Stats(inos ...uint64) (*store.Stats, error)
	PendingUploads() (chunks, bytes int64, err error)
	GC() (*reclaim.Result, error)
	ReclaimNow() (*reclaim.Result, error)
}

func list(store inspected) ([]checkpointRow, error) {
	entries, err := store.Namespace().ReadDir(meta.RootIno)
	if err != nil {
		return nil, err
	}
	rows := []checkpointRow{}
	for _, e := range entries {
		sum, err := store.CheckpointTotals(e.Ino)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name, err)
		}
		r := checkpointRow{Name: e.Name, Type: "file", Files: sum.Files, LogicalBytes: sum.Bytes, Views: []string{}}
		switch e.Mode {
		case syscall.S_IFDIR:
			r.Type = "dir"
			if children, err := store.Namespace().ReadDir(e.Ino); err == nil && views.HasWeights(children) {
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
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) statCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat [NAME...]",
		Short: "Show logical, deduplicated and stored bytes of checkpoints or the store",
		Long: `Show the files and the logical (as written), unique (after deduplication) and
stored (after compression) bytes of checkpoint NAME (a nested path or a
file too; several NAMEs are summed, each chunk once), or of the whole store,
the files a mount saved and has yet to chunk (staged: in logical bytes
only), and for the store the disk its hot copies take and the chunks
write-back has still to upload to its bucket. --json prints {name, store,
files, logical_bytes, unique_bytes, stored_bytes, dedup_ratio,
compression_ratio, staged_files, staged_bytes, delta_chunks, delta_bytes,
kept_for_deltas_bytes, hot_bytes, pending_upload_chunks,
pending_upload_bytes}. Chunks stored as deltas against another version are
in stored bytes, and so are the chunks they need that NAME does not hold.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(store.Options{ReadOnly: true}, func(opened *store.Store) error {
				var store inspected = opened
				inos, names := []uint64{meta.RootIno}, []string{}
				if len(args) > 0 {
					inos = inos[:0]
				}
				for _, arg := range args {
					name, err := cleanName(arg)
					if err != nil {
						return err
					}
					in, err := store.Namespace().Resolve(name)
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					inos, names = append(inos, in.Ino), append(names, name)
				}
				name := strings.Join(names, " ")
				st, err := store.Stats(inos...)
				if err != nil {
					return err
				}
				r := statReport{Name: name, Store: a.storeDir, Files: st.Files, LogicalBytes: st.Logical,
					UniqueBytes: st.Unique, StoredBytes: st.Stored, StagedFiles: st.Staged, StagedBytes: st.StagedBytes,
					DedupRatio: ratio(st.Unique, st.Logical), CompressionRatio: ratio(st.Stored, st.Unique),
					DeltaChunks: st.Deltas, DeltaBytes: st.DeltaBytes, KeptForDeltas: st.KeptForDeltas}
				if r.HotBytes, err = hot.Usage(hotDir(store.Dir())); err != nil {
					return err
				}
				if r.PendingUploadChunks, r.PendingUploadBytes, err = store.PendingUploads(); err != nil {
					return err
				}
				if asJSON {
					return a.printJSON(r)
				}
				r.print(a.stdout)
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
	StagedFiles      int64   `json:"staged_files"`      // saved, not chunked yet
	StagedBytes      int64   `json:"staged_bytes"`
	DeltaChunks      int64   `json:"delta_chunks"` // stored as deltas against another version
	DeltaBytes       int64   `json:"delta_bytes"`
	KeptForDeltas    int64   `json:"kept_for_deltas_bytes"` // what those need, outside NAME
	// Of the whole store, whatever NAME:
	HotBytes            int64 `json:"hot_bytes"` // decoded hot copies on disk
	PendingUploadChunks int64 `json:"pending_upload_chunks"`
	PendingUploadBytes  int64 `json:"pending_upload_bytes"`
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 1
	}
	return float64(a) / float64(b)
}

func (r *statReport) print(out io.Writer) {
	label := r.Name
	if label == "" {
		label = "store " + r.Store
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%s\n", label)
	fmt.Fprintf(w, "files\t%d\n", r.Files)
	fmt.Fprintf(w, "logical bytes\t%d\t(%s)\n", r.LogicalBytes, humanize.IBytes(uint64(r.LogicalBytes)))
	fmt.Fprintf(w, "unique bytes\t%d\t(%s)\tdedup ratio %.3f\n", r.UniqueBytes, humanize.IBytes(uint64(r.UniqueBytes)), r.DedupRatio)
	fmt.Fprintf(w, "stored bytes\t%d\t(%s)\tcompression ratio %.3f\n", r.StoredBytes, humanize.IBytes(uint64(r.StoredBytes)), r.CompressionRatio)
	fmt.Fprintf(w, "stored / logical\t%.3f\n", ratio(r.StoredBytes, r.LogicalBytes))
	fmt.Fprintf(w, "staged, not chunked yet\t%d files\t(%s)\n", r.StagedFiles, humanize.IBytes(uint64(r.StagedBytes)))
	if r.DeltaChunks > 0 || r.KeptForDeltas > 0 {
		fmt.Fprintf(w, "stored as deltas\t%d chunks\t(%s)\tand %s they need elsewhere\n", r.DeltaChunks,
			humanize.IBytes(uint64(r.DeltaBytes)), humanize.IBytes(uint64(r.KeptForDeltas)))
	}
	fmt.Fprintf(w, "store hot copies\t%d\t(%s)\n", r.HotBytes, humanize.IBytes(uint64(r.HotBytes)))
	fmt.Fprintf(w, "store pending uploads\t%d chunks\t(%s)\n", r.PendingUploadChunks, humanize.IBytes(uint64(r.PendingUploadBytes)))
	w.Flush()
}

func (a *app) rmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a checkpoint (a mount frees its space in the background, gc now)",
		Long: `Remove checkpoint NAME (or a nested path, run1/step-100) and everything in it.
Against a running mount it is removed through the mount, as 'rm -r' would be:
files still open keep reading, and the mount frees the space within
--reclaim-after. Without a mount, 'ckptfs gc' frees it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := cleanName(args[0])
			if err != nil {
				return err
			}
			return a.withStore(store.Options{}, func(store *store.Store) error {
				parent, err := store.Namespace().Resolve(path.Dir(name))
				if err != nil {
					return err
				}
				if _, err := store.Namespace().Lookup(parent.Ino, path.Base(name)); err != nil {
					return fmt.Errorf("rm %s: %w", name, err)
				}
				if a.live == nil {
					if err := store.Namespace().RemoveAll(parent.Ino, path.Base(name)); err != nil {
						return fmt.Errorf("rm %s: %w", name, err)
					}
					fmt.Fprintf(a.stdout, "removed %s; run 'ckptfs gc' to free its space\n", name)
					return nil
				}
				// Through the mount, so that open files and the kernel's
				// caches see an unlink; below the mountpoint, never through
				// a symlink another user put on the path since the check.
				if a.live.checked != nil {
					a.live.checked(name)
				}
				if err := localfs.RemoveBeneath(a.live.mnt, name); err != nil {
					return fmt.Errorf("rm %s: %w", name, err)
				}
				if a.live.reclaimAfter > 0 {
					fmt.Fprintf(a.stdout, "removed %s; the mount frees its space within %s ('ckptfs gc' does it now)\n", name, a.live.reclaimAfter)
				} else {
					fmt.Fprintf(a.stdout, "removed %s; run 'ckptfs gc' to free its space\n", name)
				}
				return nil
			})
		},
	}
}

func (a *app) gcCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Free chunks no file references and compact the store",
		Long: `Free the chunks no file references, delete packs left empty and rewrite packs
a quarter garbage. Without a mount it also deletes inode records no folder
reaches (a crash can leave them) and compacts the index. Against a running
mount it runs the mount's reclaim now, waiting a few seconds for chunks
let go in the last seconds; chunks that open files still read stay.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(store.Options{}, func(opened *store.Store) error {
				var store inspected = opened
				collect := store.GC
				if a.live != nil {
					collect = store.ReclaimNow
				}
				res, err := collect()
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "freed %d chunks (%s stored), %d orphan inodes; removed %d packs (%d rewritten), %s of disk freed; %d value-log files rewritten\n",
					res.Chunks, humanize.IBytes(uint64(res.ChunkBytes)), res.Inodes,
					res.PacksRemoved, res.PacksRewritten, humanize.IBytes(uint64(res.PackBytesFreed)), res.ValueLogRewrites)
				if res.Recent > 0 {
					fmt.Fprintf(a.stdout, "%d chunks stored or let go in the last seconds are kept for the next pass\n", res.Recent)
				}
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
			return a.withStore(store.Options{AllowDamagedTables: true, ReadOnly: true}, func(store *store.Store) error {
				rep, err := fsck.Store(store)
				if err != nil {
					return err
				}
				if asJSON {
					out := fsckJSON{Files: rep.Files, Chunks: rep.Chunks, Bytes: rep.Bytes, InBucket: rep.InBucket, Problems: append([]string{}, rep.Problems...)}
					if err := a.printJSON(out); err != nil {
						return err
					}
				} else {
					for _, p := range rep.Problems {
						fmt.Fprintln(a.stdout, "problem:", p)
					}
					if rep.InBucket > 0 {
						fmt.Fprintf(a.stdout, "%d chunks are held by the bucket only, and verified when fetched\n", rep.InBucket)
					}
					fmt.Fprintf(a.stdout, "checked %d files, %d chunks (%s): %d problems\n",
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
