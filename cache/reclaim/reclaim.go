// Package reclaim frees what no inode record names: the index entries of
// unreferenced chunks, and the packs they leave mostly empty. A Collector
// runs passes while the store is in use (Pass, paced by a Pacer), and GC
// for a store nothing else uses. Reference counts (usage.Refs) say what
// may be garbage since the last pass; Live says what must stay although
// unnamed; the chunk index says which chunks are deltas and what they
// need. A pack goes only once the index entries that left it are
// durable, so a crash at any point loses nothing live.
package reclaim

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/compaction"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/ckptfs/ckptfs/cache/usage"
	"github.com/dgraph-io/badger/v4"
)

// Result reports what a pass or a GC freed.
type Result struct {
	Chunks, ChunkBytes int64 // unreferenced chunks deleted and their stored size
	Inodes             int64 // unreachable inode records deleted
	PacksRewritten     int   // packs whose live records were copied to a new pack
	PacksRemoved       int   // pack files deleted
	PackBytesFreed     int64 // disk space the deleted packs took, less what was copied
	ValueLogRewrites   int   // value-log files Badger rewrote to return space
	// Recent counts unreferenced chunks kept for having been stored,
	// deduplicated or let go lately (see Live): a later pass frees them.
	Recent int64
	// Weighed counts the chunks the pass looked at: those that may have
	// become garbage since the pass before, not the whole index.
	Weighed int64
}

// add counts what o freed into r; Recent is o's, the last pass's.
func (r *Result) add(o *Result) {
	r.Chunks += o.Chunks
	r.ChunkBytes += o.ChunkBytes
	r.Inodes += o.Inodes
	r.PacksRewritten += o.PacksRewritten
	r.PacksRemoved += o.PacksRemoved
	r.PackBytesFreed += o.PackBytesFreed
	r.ValueLogRewrites += o.ValueLogRewrites
	r.Recent = o.Recent
}

// A pack is rewritten once this fraction of it is garbage.
const packGarbageRatio = 0.25

// compactRate bounds the bytes per second a pass copies out of packs, so a
// training job writing meanwhile keeps the disk.
const compactRate = 128 << 20

// Store is what a Collector needs of the store whose chunks it frees,
// beyond the parts it is given.
type Store interface {
	// HaltStores stops every store of a chunk, and every dedup lookup,
	// until resume: a pass deletes index entries meanwhile.
	HaltStores() (resume func())
	// MayHoldDeltas reports whether the index may hold a delta, whose
	// reference must stay while it does.
	MayHoldDeltas() bool
	// PackRemoved forgets what the store knew of pack id, once it is gone.
	PackRemoved(id uint32) error
}

// Parts are the store's pieces a Collector works on.
type Parts struct {
	DB        *badger.DB
	Compactor *compaction.Compactor // compacts DB, gc's flatten included
	NS        *meta.Namespace
	Index     *meta.Index
	Packs     *pack.Set
	Refs      *usage.Refs   // what records name, and what may be garbage
	Usage     *usage.Counts // what each checkpoint holds, counted with Refs
	Live      *Live         // nil: nothing in use to keep
	// Evict is held shared to read from packs and to append and index a
	// chunk, and exclusively to move index entries and drop packs.
	Evict *sync.RWMutex
	Log   *slog.Logger
}

// Collector runs one pass or GC at a time.
type Collector struct {
	Parts
	store Store

	mu      sync.Mutex       // one pass at a time; see Frozen and Exclusive
	garbage map[uint32]int64 // garbage bytes of each pack, under mu
}

// New returns a Collector of the chunks of p, stored by s.
func New(p Parts, s Store) *Collector {
	return &Collector{Parts: p, store: s, garbage: map[uint32]int64{}}
}

// Pass frees the chunks no inode references and rewrites the packs they
// leave mostly empty, while the store is in use: readers, writers and
// evictions go on meanwhile, and what Live holds is kept.
//
// A pass weighs only the chunks that may have become garbage since the
// last (see usage.Refs), and the packs they were freed from: its cost
// follows what changed. The first pass of a store counts the references
// once, from one snapshot, and weighs every chunk and pack.
func (c *Collector) Pass() (*Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Live.turn()
	if !c.Refs.Built() {
		if err := c.countRefs(); err != nil {
			return nil, fmt.Errorf("reclaim: %w", err)
		}
	}
	res := &Result{}
	freed, err := c.freeCandidates(res)
	if err != nil {
		return res, fmt.Errorf("reclaim: %w", err)
	}
	sealed, err := c.sealedPacks()
	if err != nil {
		return res, fmt.Errorf("reclaim: %w", err)
	}
	if cur, appending := c.Packs.Current(); appending && freed[cur] {
		c.sealPack(cur) // it can go like any other now
		sealed = append(sealed, cur)
	}
	var compact []uint32
	live := map[uint32][]meta.Record{}
	for _, id := range sealed {
		st, err := os.Stat(c.Packs.Path(id))
		if err != nil {
			delete(c.garbage, id) // evicted meanwhile
			continue
		}
		if float64(c.garbage[id]) < packGarbageRatio*float64(st.Size()) {
			continue
		}
		if live[id], err = c.Index.InPack(id); err != nil {
			return res, fmt.Errorf("reclaim: %w", err)
		}
		compact = append(compact, id)
	}
	if err := c.sweepPacks(compact, live, res); err != nil {
		return res, fmt.Errorf("reclaim: %w", err)
	}
	if err := c.DB.RunValueLogGC(0.5); err == nil {
		res.ValueLogRewrites++
	}
	return res, nil
}

// countRefs counts the references of every chunk from one snapshot (see
// usage.Refs), and what every checkpoint holds (usage.Counts), makes every
// indexed chunk no record names a candidate, and counts the garbage of
// every sealed pack: the store's one full pass.
func (c *Collector) countRefs() error {
	counts := map[usage.Key]int32{}
	y := usage.NewTally()
	start := func() { c.Refs.Start(); c.Usage.Start() }
	err := c.NS.SnapshotFrom(start, func(snap *meta.Namespace) error {
		if err := snap.ScanEntries(y.Entry); err != nil {
			return err
		}
		return snap.ScanRecords(func(in *meta.Inode) error {
			for _, ch := range in.Content.Chunks {
				counts[usage.KeyOf(ch.Hash)]++
			}
			y.Record(in)
			return nil
		})
	})
	if err != nil {
		c.Refs.Abandon()
		c.Usage.Abandon()
		return err
	}
	c.Usage.Install(y)
	sealed, err := c.sealedPacks() // every record of these is indexed now
	if err != nil {
		return err
	}
	used := map[uint32]int64{}
	var unnamed []chunk.Hash
	err = c.Index.Scan(func(h chunk.Hash, loc pack.Loc, err error) error {
		if err != nil {
			c.Log.Warn("reclaim: chunk left in place", "chunk", h.String(), "err", err)
			return nil
		}
		used[loc.Pack] += pack.RecordHeader + int64(loc.Len)
		if counts[usage.KeyOf(h)] == 0 {
			unnamed = append(unnamed, h)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.Refs.Install(counts, unnamed)
	c.garbage = map[uint32]int64{}
	for _, id := range sealed {
		if st, err := os.Stat(c.Packs.Path(id)); err == nil {
			c.garbage[id] = max(st.Size()-used[id], 0)
		}
	}
	return nil
}

// Now is Pass for a user who asked for the space now: while a
// pass keeps chunks only for being recent, it waits for their generation
// to age and runs another, three passes at most (about five seconds).
func (c *Collector) Now() (*Result, error) {
	total := &Result{}
	for pass := 0; ; pass++ {
		res, err := c.Pass()
		if res != nil {
			total.add(res)
		}
		if err != nil || res.Recent == 0 || pass == 2 {
			return total, err
		}
		time.Sleep(c.Live.MinAge())
	}
}

// Frozen calls fn with a snapshot of the namespace (see
// meta.Namespace.Snapshot) while no reclaim runs: every chunk a record of
// the snapshot references stays while fn runs, so a check of a store in
// use sees one consistent state. Reclaim waits for fn, and so does what
// runs Unfrozen.
func (c *Collector) Frozen(fn func(*meta.Namespace) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.NS.Snapshot(fn)
}

// Unfrozen runs fn while no Frozen check runs: what removes a file a
// snapshot may name (a staged file) waits for the check.
func (c *Collector) Unfrozen(fn func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fn()
}

// Exclusive runs fn while no pass (nor GC, nor Frozen check) runs: fn
// moves chunks to new values (as deltas) and says of each value it leaves
// behind, counted as its pack's garbage; or it drops packs (eviction),
// which must not meet a pass copying records into them.
func (c *Collector) Exclusive(fn func(left func(pack.Loc)) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fn(func(l pack.Loc) { c.garbage[l.Pack] += pack.RecordHeader + int64(l.Len) })
}
