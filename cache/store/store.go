// Package store is the ckptfs store: content-addressed chunks (compressed,
// checksummed, deduplicated) and the namespace of inodes and file manifests,
// kept in an embedded Badger database, with an in-memory LRU of decoded
// chunks, readahead, garbage collection and a verifier.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/chunkcache"
	"github.com/ckptfs/ckptfs/cache/compaction"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/ckptfs/ckptfs/cache/reclaim"
	"github.com/ckptfs/ckptfs/cache/usage"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options tune a Store; the zero value gives the defaults.
type Options struct {
	// CacheBytes bounds the LRU of decoded chunks (default 128 MiB).
	CacheBytes int64
	Logger     *slog.Logger
	// AllowDamagedTables opens a store whose Badger tables have damaged
	// blocks, for fsck to report what they affect. Without it Open refuses.
	AllowDamagedTables bool
	// ReclaimEvery, if set, runs Reclaim in the background that long after
	// the namespace changes (see reclaim.Pacer); a daemon sets it.
	ReclaimEvery time.Duration
	// Mounted says the store serves a mount: the chunks open files and
	// ingests use are tracked, so that Reclaim may run while they go on
	// (ReclaimEvery implies it).
	Mounted bool
	// Loaders bounds the chunks loaded ahead of readers at once (default:
	// the cores). Fetches from a bucket wait on the network and want more.
	Loaders int
	// VerifyReads hashes every chunk a reader loads, as fsck does, on top
	// of the checks every read makes (see chunk.DecodeChecksummed).
	VerifyReads bool
	// ReadOnly opens an existing store to look at it (fsck, ls, stat):
	// nothing is settled, removed, recovered or written, whatever a crash
	// left.
	ReadOnly bool
	// touchedFor is how long a chunk stored or let go is kept at least
	// although no record names it (see reclaim.Live; default 2 s): tests
	// shorten it.
	touchedFor time.Duration
}

// Store is an open ckptfs store directory.
type Store struct {
	dir  string
	opts badger.Options
	db   *badger.DB
	// ns is the tree of files. The store acts on its changes through the
	// hooks it opens it with; consumers get it from Namespace.
	ns      *meta.Namespace
	index   *meta.Index
	log     *slog.Logger
	packs   *pack.Set
	codecs  *chunk.Codecs
	chunks  *chunkcache.Cache
	metrics *Metrics
	damage  error   // damaged tables found on open, see AllowDamagedTables
	backing Backing // noBacking unless SetBacking
	// evictMu is held to read from packs and to append and index a chunk,
	// and taken exclusively to evict.
	evictMu sync.RWMutex
	// putLocks serialize stores of chunks by their hash's first byte, so
	// that two writers of one new chunk append it once.
	putLocks [256]sync.Mutex
	values   sync.Pool // *[]byte: buffers chunk values are encoded into
	makeRoom func(need int64)
	// follower is told of committed changes after the store (see
	// FollowRecords).
	follower  atomic.Pointer[func([]meta.RecordChange)]
	space     freeSpace             // see EnsureSpace
	live      *reclaim.Live         // what Reclaim keeps although unreferenced; nil offline
	refs      *usage.Refs           // what records name, and what may be garbage
	usage     *usage.Counts         // what each checkpoint holds
	reclaim   *reclaim.Collector    // frees what no record names
	pacer     *reclaim.Pacer        // nil unless Options.ReclaimEvery
	compactor *compaction.Compactor // nil when read-only
	// deltaMu runs one StoreAsDeltas at a time; hasDeltas says the index
	// may hold a delta, whose reference reclaim must keep.
	deltaMu   sync.Mutex
	hasDeltas atomic.Bool
	// cachesBucket says the store is, or was, in front of a bucket, so its
	// index may hold marks of chunks the bucket has (see PutChunk).
	cachesBucket atomic.Bool
	verifyReads  bool
	readOnly     bool
	unclean      bool // the session before this one did not close cleanly
	// suspect are the packs written by sessions that did not close
	// cleanly: their tails may not have reached the disk, so a record in
	// one is checked before dedup trusts it (see PutChunk).
	suspectMu sync.Mutex
	suspect   map[uint32]bool
	// beforeRebase, if set, runs as StoreAsDeltas is about to index a
	// batch of deltas: tests move a chunk there, as a pack rewrite would.
	beforeRebase func()
	// afterAppend, if set, runs between a chunk's append and its index
	// entry: tests hold a store there.
	afterAppend func()
}

// Metrics returns the store's counters, for a daemon to serve.
func (s *Store) Metrics() *Metrics { return s.metrics }

// ErrLocked is returned by Open when another process holds the store.
var ErrLocked = errors.New("store is in use by another ckptfs process (mounted, or a command still running)")

// Open opens or creates the store in dir (mode 0700).
func Open(dir string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 128 << 20
	}
	if o.ReadOnly {
		if _, err := os.Stat(filepath.Join(dir, "db")); err != nil {
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
		return openStore(dir, o)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create store %s: %w", dir, err)
	}
	return openStore(dir, o)
}

// openStore opens the store in dir, made already unless o.ReadOnly.
func openStore(dir string, o Options) (*Store, error) {
	packs, err := pack.Open(filepath.Join(dir, "packs"))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	bo := badger.DefaultOptions(filepath.Join(dir, "db")).
		WithLogger(badgerLogger{o.Logger}).
		WithCompression(options.None). // chunks are compressed by our codecs
		WithValueThreshold(1 << 10).   // long manifests go to the value log
		// Value-log files are mapped at twice this size while open (sparse,
		// but du --apparent-size and ls count it), and GC rewrites one file
		// at a time: small files keep both small.
		WithValueLogFileSize(64 << 20).
		WithMemTableSize(32 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		// A compaction.Compactor compacts: Badger's own wake 20 times a second.
		WithNumCompactors(0).
		// A session's level-0 table goes to the base level at its close,
		// which is cheap (a small level above the last once the records
		// pass ~100 MiB); left to pile up, five would make the Compactor
		// merge every level into the last.
		WithCompactL0OnClose(true).
		WithChecksumVerificationMode(options.OnBlockRead). // a damaged table block is an error, not garbage
		WithReadOnly(o.ReadOnly)
	db, err := meta.Open(bo)
	// Badger reports a torn memtable with the cause in the text only.
	if o.ReadOnly && err != nil && (errors.Is(err, badger.ErrTruncateNeeded) || strings.Contains(err.Error(), badger.ErrTruncateNeeded.Error())) {
		// A crash left a torn tail in Badger's log, which only a writer
		// may cut: Badger's own recovery, no change to what the store holds.
		db, err = meta.Open(bo.WithReadOnly(false))
	}
	if err != nil {
		if strings.Contains(err.Error(), "Another process is using this Badger database") {
			return nil, fmt.Errorf("open store %s: %w", dir, ErrLocked)
		}
		if damaged := meta.DamagedOnOpen(err); damaged != nil {
			return nil, fmt.Errorf("open store %s: %w (not even fsck can open it)", dir, damaged)
		}
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	damage := meta.CheckTables(db, bo.Dir)
	if damage != nil && !o.AllowDamagedTables {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w (ckptfs fsck reports what it affects)", dir, damage)
	}
	s := &Store{dir: dir, opts: bo, db: db, index: meta.NewIndex(db), log: o.Logger, packs: packs, metrics: newMetrics(), damage: damage, backing: noBacking{},
		refs: usage.NewRefs(), usage: usage.New(), verifyReads: o.VerifyReads, readOnly: o.ReadOnly, suspect: map[uint32]bool{}}
	if o.Loaders <= 0 {
		o.Loaders = runtime.NumCPU()
	}
	if o.touchedFor == 0 {
		o.touchedFor = 2 * time.Second
	}
	if o.Mounted || o.ReclaimEvery > 0 {
		s.live = reclaim.NewLive(o.touchedFor)
	}
	s.codecs = chunk.NewCodecs()
	s.chunks = chunkcache.New(s.loadChunk, o.CacheBytes, o.Loaders, s.metrics.cacheHits, s.metrics.cacheMisses)
	s.ns, err = meta.OpenNamespace(db, meta.Hooks{
		Reserve: func() error { return s.EnsureSpace(0, metaReserve, false) },
		Claim: func(parent uint64, name string) error {
			if parent != meta.RootIno {
				return nil
			}
			return s.backing.Claim(name)
		},
		Changed: func() { s.backing.Changed() },
		Records: s.recordsChanged,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if !o.ReadOnly {
		s.compactor = compaction.Start(db, s.log, time.Second)
	}
	s.reclaim = reclaim.New(reclaim.Parts{DB: db, Compactor: s.compactor, NS: s.ns, Index: s.index, Packs: packs, Refs: s.refs, Usage: s.usage,
		Live: s.live, Evict: &s.evictMu, Log: s.log}, collected{s})
	s.cachesBucket.Store(s.RemoteURL() != "")
	if o.ReadOnly {
		return s, nil
	}
	if err := s.index.EnsureListing(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	hasDeltas, err := s.index.HasDeltas()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s.hasDeltas.Store(hasDeltas)
	if s.unclean, err = s.startSession(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if o.ReclaimEvery > 0 {
		s.pacer = reclaim.StartPacer(s.reclaim, o.ReclaimEvery)
	}
	return s, nil
}

// recordsChanged follows the records a committed change wrote or
// removed: the references of their chunks, and what their checkpoints
// hold.
func (s *Store) recordsChanged(chs []meta.RecordChange) {
	var removed, added []chunk.Ref
	for _, c := range chs {
		same := c.Before != nil && c.After != nil && c.Before.Content.Equal(&c.After.Content)
		if c.Before != nil && !same {
			removed = append(removed, c.Before.Content.Chunks...)
		}
		if c.After != nil && !same {
			added = append(added, c.After.Content.Chunks...)
		}
	}
	if len(removed)+len(added) > 0 {
		s.refs.Changed(removed, added)
	}
	if len(removed) > 0 {
		s.pacer.Kick() // what they named may be garbage now
	}
	s.usage.Changed(chs)
	if f := s.follower.Load(); f != nil {
		(*f)(chs)
	}
}

// FollowRecords has fn told of every change committed from now on, after
// the store followed it: what the versions encoder learns from. fn must
// not block.
func (s *Store) FollowRecords(fn func([]meta.RecordChange)) { s.follower.Store(&fn) }

// DeltaOf is the reference chunk h is stored as a delta against, if it is.
func (s *Store) DeltaOf(h chunk.Hash) (ref chunk.Hash, ok bool, err error) {
	return s.index.Reference(h)
}

// CheckpointTotals is what checkpoint ino (an entry of the root) holds:
// kept as the store changes (see usage.Counts).
func (s *Store) CheckpointTotals(ino uint64) (usage.Totals, error) {
	return s.usage.Checkpoint(s.ns, ino)
}

// Unclean reports whether the session before this one did not close
// cleanly: what it left may have been cut short by a crash.
func (s *Store) Unclean() bool { return s.unclean }

// CachesBucket reports whether the store is, or was, in front of a bucket.
func (s *Store) CachesBucket() bool { return s.cachesBucket.Load() }

// SetMakeRoom sets what is asked to free need bytes of the store's disk
// before a write fails with ENOSPC (the store reads the free space again
// after it). Hot copies go before the store refuses data. Set it before the
// store serves.
func (s *Store) SetMakeRoom(fn func(need int64)) { s.makeRoom = fn }

// Damage names the damaged tables found on open (AllowDamagedTables).
func (s *Store) Damage() error { return s.damage }

// Namespace is the tree of files the store holds.
func (s *Store) Namespace() *meta.Namespace { return s.ns }

// Dir is the store directory.
func (s *Store) Dir() string { return s.dir }

// Logger is where the store logs.
func (s *Store) Logger() *slog.Logger { return s.log }

// Sync makes the chunks and records written so far durable, so that no
// durable index entry or record points at bytes that are not. It returns
// once all that was written before it began is durable, whoever else
// syncs meanwhile. Staged files are the write path's to sync.
func (s *Store) Sync() error {
	if err := s.SyncChunks(); err != nil {
		return err
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync store %s: %w", s.dir, err)
	}
	return nil
}

// SyncChunks makes the chunks stored so far durable: a record that names
// chunks is written only after it returns, so that no durable record
// names bytes that are not.
func (s *Store) SyncChunks() error {
	if err := s.packs.Sync(); err != nil {
		return fmt.Errorf("sync store %s: %w", s.dir, err)
	}
	return nil
}

// startSession records that a session has the store open, from the pack
// it will make first, and reports whether the last one did not close
// cleanly: then the packs it wrote are suspect from here on.
func (s *Store) startSession() (unclean bool, err error) {
	var next uint32 // the first id never given to a pack
	if v, err := s.ns.Value(meta.KeyPackIDs); err == nil && len(v) == 4 {
		next = binary.BigEndian.Uint32(v) + 1
	} else if err != nil && !errors.Is(err, meta.ErrNoValue) {
		return false, err
	}
	next = max(next, s.packs.NextID())
	if v, err := s.ns.Value(meta.KeySession); err == nil && len(v) == 4 {
		// Every pack the last session made is suspect, those the crash
		// took the file of too: the index may still name them.
		unclean = true
		first := binary.BigEndian.Uint32(v)
		for id := first; id < next; id++ {
			if err := s.ns.SetValue(suspectKey(id), []byte{}); err != nil {
				return true, err
			}
		}
		s.log.Warn("the store was not closed cleanly: records of the packs its last session wrote are checked before they are deduplicated against",
			"store", s.dir, "packs", fmt.Sprintf("%d-%d", first, next-1))
	} else if err != nil && !errors.Is(err, meta.ErrNoValue) {
		return false, err
	}
	suspect, err := s.ns.Values(meta.PrefixSuspect)
	if err != nil {
		return unclean, err
	}
	for k := range suspect {
		if id, err := strconv.ParseUint(k, 16, 32); err == nil {
			s.suspect[uint32(id)] = true
		}
	}
	// A pack's id is in Badger's log before any index entry naming it: if
	// the entries outlive a crash, so does the id, and it is never reused.
	s.packs.SetIDLog(next, func(id uint32) error {
		return s.ns.SetValue(meta.KeyPackIDs, binary.BigEndian.AppendUint32(nil, id))
	})
	if err := s.ns.SetValue(meta.KeySession, binary.BigEndian.AppendUint32(nil, s.packs.NextID())); err != nil {
		return unclean, err
	}
	return unclean, s.db.Sync() // before any pack of the session is written
}

func suspectKey(id uint32) string { return meta.PrefixSuspect + strconv.FormatUint(uint64(id), 16) }

// isSuspect reports whether pack id was written by a session that did not
// close cleanly.
func (s *Store) isSuspect(id uint32) bool {
	s.suspectMu.Lock()
	defer s.suspectMu.Unlock()
	return s.suspect[id]
}

// collected is the store as its Collector sees it.
type collected struct{ s *Store }

// HaltStores holds every put lock: no chunk is stored, and none found by
// dedup, until resume.
func (c collected) HaltStores() (resume func()) {
	for i := range c.s.putLocks {
		c.s.putLocks[i].Lock()
	}
	return func() {
		for i := range c.s.putLocks {
			c.s.putLocks[i].Unlock()
		}
	}
}

func (c collected) MayHoldDeltas() bool         { return c.s.hasDeltas.Load() }
func (c collected) PackRemoved(id uint32) error { return c.s.packRemoved(id) }

// Reclaim runs one pass of the Collector (see reclaim.Collector.Pass).
func (s *Store) Reclaim() (*reclaim.Result, error) { return s.reclaim.Pass() }

// ReclaimNow runs passes until what was kept for being recent is freed
// (see reclaim.Collector.Now): a user asked for the space.
func (s *Store) ReclaimNow() (*reclaim.Result, error) { return s.reclaim.Now() }

// GC frees what no record names in a store nothing else uses (see
// reclaim.Collector.GC).
func (s *Store) GC() (*reclaim.Result, error) { return s.reclaim.GC() }

// Frozen calls fn with a snapshot of the namespace while no reclaim runs
// (see reclaim.Collector.Frozen).
func (s *Store) Frozen(fn func(*meta.Namespace) error) error { return s.reclaim.Frozen(fn) }

// Unfrozen runs fn while no Frozen check runs (see
// reclaim.Collector.Unfrozen).
func (s *Store) Unfrozen(fn func() error) error { return s.reclaim.Unfrozen(fn) }

// packRemoved forgets what the store knew of pack id, once it is gone.
func (s *Store) packRemoved(id uint32) error {
	if err := s.index.DropPack(id); err != nil {
		return err
	}
	s.suspectMu.Lock()
	defer s.suspectMu.Unlock()
	if !s.suspect[id] {
		return nil
	}
	delete(s.suspect, id)
	return s.ns.SetValue(suspectKey(id), nil)
}

// Close flushes and closes the store.
func (s *Store) Close() error {
	if s.readOnly {
		s.ns.Close()
		if err := errors.Join(s.packs.Close(), s.db.Close()); err != nil {
			return fmt.Errorf("close store %s: %w", s.dir, err)
		}
		return nil
	}
	s.pacer.Stop()
	errs := []error{s.backing.Close(), s.packs.Close()}
	if s.ns != nil {
		if errors.Join(errs...) == nil { // all durable: the session ends cleanly
			errs = append(errs, s.ns.SetValue(meta.KeySession, nil))
		}
		errs = append(errs, s.ns.Close())
	}
	s.compactor.Stop() // after the last writes: one may wait for a compaction
	errs = append(errs, s.db.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close store %s: %w", s.dir, err)
	}
	return s.sealValueLog()
}

// Abandon closes the store as a killed process leaves it: nothing settled
// or synced that was not, the session not ended, so that the next open
// recovers as after a crash. Tests of recovery use it.
func (s *Store) Abandon() error {
	s.pacer.Stop()
	s.compactor.Stop()
	s.ns.Close()
	return errors.Join(s.packs.Close(), s.db.Close())
}

// sealValueLog opens and closes the database once more after a clean close.
// Badger scans the newest value-log file on open and truncates it at the
// first entry that fails its checksum: right after a crash that drops a torn
// tail, but a damaged byte in the middle would drop every later value too.
// Each open starts a new, empty value-log file, so this extra open leaves an
// empty newest file, and the session's values sit in an older one that later
// opens do not truncate; a damaged value there only fails its own reads.
func (s *Store) sealValueLog() error {
	db, err := meta.Open(s.opts)
	if err != nil {
		return fmt.Errorf("close store %s: seal value log: %w", s.dir, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close store %s: seal value log: %w", s.dir, err)
	}
	return nil
}

// badgerLogger routes Badger's chatter to slog, keeping only warnings and
// errors visible at the default level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Debugf(f string, a ...any) {}
