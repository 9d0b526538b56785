// Package writes is the store's write path: a file's content while it is
// written (a Draft), its commit, and the settling of what commits staged.
//
// A writer waits for the disk only. When the path writes behind, every
// write lands in a draft file, and a commit renames it into the store's
// staged folder and records it as the file's content (meta.Content.Staged):
// visible at once, and kept across a crash of the daemon. The settler then
// chunks, deduplicates and encodes staged files in the background and swaps
// each record to its chunks (see settle.go). Otherwise writes in order from
// an empty file stream straight into ingest, anything else goes through a
// draft file, and a commit chunks the content before it is recorded.
//
// Either way a commit swaps the file's content in one transaction, so
// readers never see half a file, and a record that names chunks is written
// only after they are durable.
package writes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// Store is what the write path uses of the store: its namespace, its
// folders of drafts and staged files, ingest and syncs, its space, and the
// reading of what it commits.
type Store interface {
	Namespace() *meta.Namespace
	Dir() string
	Logger() *slog.Logger
	DraftsDir() string
	StagedDir() string
	StagedPath(id uint64) string
	Ingest(r io.Reader) (*meta.Content, func(), error)
	NewReader(name string, c *meta.Content) *store.FileReader
	SyncChunks() error
	Sync() error
	EnsureSpace(n, reserve int64, user bool) error
	Roomy(n, reserve, diskPart int64) bool
	CachesBucket() bool
	Unclean() bool
	Unfrozen(fn func() error) error
	Publish(ctx context.Context, checkpoint string) error
}

// Options tune a write path; the zero value chunks every file before its
// commit returns.
type Options struct {
	// Behind lets commits stage files and chunk them in the background; a
	// daemon sets it. Without it, Open settles what a crash left before it
	// returns.
	Behind bool
	Logger *slog.Logger
}

// Path is the write path of an open store.
type Path struct {
	st      Store
	log     *slog.Logger
	behind  bool
	settler *settler
	metrics *Metrics
}

// Open opens the write path of st: it clears the drafts a dead process
// left, recovers what a crash left staged (see settler.clearOrphans), and
// settles it in the background when behind, else before it returns.
func Open(st Store, o Options) (*Path, error) {
	if o.Logger == nil {
		o.Logger = st.Logger()
	}
	w := &Path{st: st, log: o.Logger, behind: o.Behind, metrics: newMetrics()}
	w.settler = newSettler(w)
	for _, dir := range []string{st.DraftsDir(), st.StagedDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open write path of %s: %w", st.Dir(), err)
		}
	}
	if err := clearDrafts(st); err != nil {
		return nil, fmt.Errorf("open write path of %s: clear drafts: %w", st.Dir(), err)
	}
	if err := w.settler.clearOrphans(st.Unclean()); err != nil {
		return nil, fmt.Errorf("open write path of %s: staged files: %w", st.Dir(), err)
	}
	if w.Behind() {
		w.settler.start()
	} else if _, err := w.settler.settleAll(nil, 0); err != nil {
		w.log.Warn("files a crash left staged stay staged (readable, chunked at the next open)", "store", st.Dir(), "err", err)
	}
	return w, nil
}

// clearDrafts removes the drafts a process that died left, and the folder
// they were kept in before it was called drafts.
func clearDrafts(st Store) error {
	if err := os.RemoveAll(filepath.Join(st.Dir(), "staging")); err != nil {
		return err
	}
	entries, err := os.ReadDir(st.DraftsDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(st.DraftsDir(), e.Name())); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return nil
}

// Close settles what is staged and removes every settled staged file: a
// store at rest holds chunks only.
func (w *Path) Close() error {
	if err := w.settler.stop(); err != nil {
		w.log.Warn("files left staged at close (readable, chunked at the next open)", "store", w.st.Dir(), "err", err)
	}
	return nil
}

// Behind reports whether a commit may stage its file rather than chunk it
// first. In front of a bucket it may not: a close waits for the bucket,
// which takes chunks.
func (w *Path) Behind() bool { return w.behind && !w.st.CachesBucket() }

// Sync makes everything written so far durable: staged files, then the
// store's chunks and records, so that no durable record names bytes that
// are not. It returns once all that was written before it began is
// durable, whoever else syncs meanwhile.
func (w *Path) Sync() error {
	if err := w.settler.syncStaged(); err != nil {
		return fmt.Errorf("sync store %s: %w", w.st.Dir(), err)
	}
	return w.st.Sync()
}

// SettleNow chunks the staged content of records before it returns, for
// those who plan on chunks (views): what they plan from does not change
// under them. A file a writer is appending to stays staged.
func (w *Path) SettleNow(ins ...*meta.Inode) error {
	var queued []queuedFile
	for _, in := range ins {
		if id := in.Content.Staged; id != 0 {
			queued = append(queued, queuedFile{id, in.Ino})
		}
	}
	for len(queued) > 0 {
		n, _, err := w.settler.settle(queued, 0)
		if err != nil {
			return err
		}
		queued = queued[n:]
	}
	return nil
}

// Metrics are the write path's counters.
func (w *Path) Metrics() *Metrics { return w.metrics }

// ensureSpace fails with ENOSPC unless n more bytes of a draft, written
// for uid, fit with the chunk reserve kept: drafts share the store's disk,
// and filling it would leave Badger's next flush without room. Staged
// files not chunked yet count twice, as their chunks will take up to as
// much room before the files go: what they take on disk, so a sparse
// file costs nothing. Users other than root also leave root's share.
func (w *Path) ensureSpace(n int64, uid uint32) error {
	return w.st.EnsureSpace(n, store.ChunkReserve+w.settler.backlog.Load(), uid != 0)
}
