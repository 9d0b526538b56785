// Package cache is the ckptfs store: content-addressed chunks (compressed,
// checksummed, deduplicated) and the namespace of inodes and file manifests,
// kept in an embedded Badger database, with an in-memory LRU of decoded
// chunks, readahead, garbage collection and a verifier.
package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
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
	// the namespace changes (see reclaimer.go); a daemon sets it.
	ReclaimEvery time.Duration
	// Mounted says the store serves a mount: the chunks open files and
	// ingests use are tracked, so that Reclaim may run while they go on
	// (ReclaimEvery implies it).
	Mounted bool
	// Loaders bounds the chunks loaded ahead of readers at once (default:
	// the cores). Fetches from a bucket wait on the network and want more.
	Loaders int
	// WriteBehind lets commits stage files and chunks them in the
	// background (see settle.go); a daemon sets it. Without it, Open
	// settles what a crash left before it returns.
	WriteBehind bool
	// VerifyReads hashes every chunk a reader loads, as fsck does, on top
	// of the checks every read makes (see chunk.DecodeChecksummed).
	VerifyReads bool
}

// Store is an open ckptfs store directory.
type Store struct {
	dir  string
	opts badger.Options
	db   *badger.DB
	*meta.Namespace
	log     *slog.Logger
	packs   *pack.Set
	chunks  *chunkCache
	metrics *Metrics
	damage  error   // damaged tables found on open, see AllowDamagedTables
	backing Backing // noBacking unless SetBacking
	// evictMu is held to read from packs and to append and index a chunk,
	// and taken exclusively to evict.
	evictMu sync.RWMutex
	// putLocks serialize stores of chunks by their hash's first byte, so
	// that two writers of one new chunk append it once.
	putLocks  [256]sync.Mutex
	values    sync.Pool // *[]byte: buffers chunk values are encoded into
	makeRoom  func(need int64)
	live      *liveChunks // what Reclaim keeps although unreferenced
	reclaimMu sync.Mutex  // one collection at a time
	reclaimer *reclaimer  // nil unless Options.ReclaimEvery
	// cachesBucket says the store is, or was, in front of a bucket, so its
	// index may hold marks of chunks the bucket has (see PutChunk).
	cachesBucket atomic.Bool
	settler      *settler
	writeBehind  bool
	verifyReads  bool
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
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create store %s: %w", dir, err)
	}
	for _, sub := range []string{"staging", "staged"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("create store %s: %w", dir, err)
		}
	}
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
		WithNumCompactors(2).
		WithChecksumVerificationMode(options.OnBlockRead) // a damaged table block is an error, not garbage
	db, err := meta.Open(bo)
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
	s := &Store{dir: dir, opts: bo, db: db, log: o.Logger, packs: packs, metrics: newMetrics(), damage: damage, backing: noBacking{},
		live: newLiveChunks(o.Mounted || o.ReclaimEvery > 0), verifyReads: o.VerifyReads}
	s.settler = newSettler(s)
	if o.Loaders <= 0 {
		o.Loaders = runtime.NumCPU()
	}
	s.chunks = newChunkCache(s, o.CacheBytes, o.Loaders)
	s.Namespace, err = meta.OpenNamespace(db, meta.Hooks{
		Reserve: func() error { return s.ensureSpace(0, metaReserve) },
		Claim: func(parent uint64, name string) error {
			if parent != meta.RootIno {
				return nil
			}
			return s.backing.Claim(name)
		},
		Changed: func() {
			s.backing.Changed()
			s.reclaimer.kick()
			s.settler.kick() // a record may have queued a staged file
		},
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s.cachesBucket.Store(s.RemoteURL() != "")
	if o.ReclaimEvery > 0 {
		s.reclaimer = startReclaimer(s, o.ReclaimEvery)
	}
	if err := s.clearStaging(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: clear staging: %w", dir, err)
	}
	if err := s.settler.clearOrphans(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: staged files: %w", dir, err)
	}
	s.writeBehind = o.WriteBehind
	if s.WritesBehind() {
		s.settler.start()
	} else if _, err := s.settler.settleAll(nil, 0); err != nil {
		s.log.Warn("files a crash left staged stay staged (readable, chunked at the next open)", "store", dir, "err", err)
	}
	return s, nil
}

// SetMakeRoom sets what is asked to free need bytes of the store's disk
// before a write fails with ENOSPC (the store reads the free space again
// after it). Hot copies go before the store refuses data. Set it before the
// store serves.
func (s *Store) SetMakeRoom(fn func(need int64)) { s.makeRoom = fn }

// Damage names the damaged tables found on open (AllowDamagedTables).
func (s *Store) Damage() error { return s.damage }

// Dir is the store directory.
func (s *Store) Dir() string { return s.dir }

// Logger is where the store logs.
func (s *Store) Logger() *slog.Logger { return s.log }

// StagingDir holds the files being written: all of them when the store
// writes behind, else those rewritten out of order.
func (s *Store) StagingDir() string { return filepath.Join(s.dir, "staging") }

// clearStaging removes staging files left by a process that died.
func (s *Store) clearStaging() error {
	entries, err := os.ReadDir(s.StagingDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(s.StagingDir(), e.Name())); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return nil
}

// Sync makes everything written so far durable: staged files, then the
// packs, so that no durable index entry or record points at bytes that
// are not.
func (s *Store) Sync() error {
	if err := s.settler.syncStaged(); err != nil {
		return fmt.Errorf("sync store %s: %w", s.dir, err)
	}
	return s.syncChunks()
}

// syncChunks makes the chunks and records written so far durable.
func (s *Store) syncChunks() error {
	if err := s.packs.Sync(); err != nil {
		return fmt.Errorf("sync store %s: %w", s.dir, err)
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync store %s: %w", s.dir, err)
	}
	return nil
}

// Close flushes and closes the store.
func (s *Store) Close() error {
	if err := s.settler.stop(); err != nil {
		s.log.Warn("files left staged at close (readable, chunked at the next open)", "store", s.dir, "err", err)
	}
	s.reclaimer.stop()
	errs := []error{s.backing.Close(), s.packs.Close()}
	if s.Namespace != nil {
		errs = append(errs, s.Namespace.Close())
	}
	errs = append(errs, s.db.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close store %s: %w", s.dir, err)
	}
	return s.sealValueLog()
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
