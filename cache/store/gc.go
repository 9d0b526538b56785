package store

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/ckptfs/ckptfs/cache/usage"
	"github.com/dgraph-io/badger/v4"
)

// GCResult reports what a collection freed.
type GCResult struct {
	Chunks, ChunkBytes int64 // unreferenced chunks deleted and their stored size
	Inodes             int64 // unreachable inode records deleted
	PacksRewritten     int   // packs whose live records were copied to a new pack
	PacksRemoved       int   // pack files deleted
	PackBytesFreed     int64 // disk space the deleted packs took, less what was copied
	ValueLogRewrites   int   // value-log files Badger rewrote to return space
	// Recent counts unreferenced chunks kept for having been stored,
	// deduplicated or let go lately (see liveChunks): a later pass frees
	// them.
	Recent int64
	// Weighed counts the chunks the pass looked at: those that may have
	// become garbage since the pass before, not the whole index.
	Weighed int64

	garbageIn map[uint32]bool // packs chunks were deleted from
}

// A pack is rewritten once this fraction of it is garbage.
const packGarbageRatio = 0.25

// compactRate bounds the bytes per second a pass copies out of packs, so a
// training job writing meanwhile keeps the disk.
const compactRate = 128 << 20

// Reclaim frees the chunks no inode references and rewrites the packs they
// leave mostly empty, while the store is in use: readers, writers and
// evictions go on meanwhile, and what liveChunks holds is kept. A pack goes
// only once the index entries that left it are durable, so a crash at any
// point loses nothing live.
//
// A pass weighs only the chunks that may have become garbage since the
// last (see refs), and the packs they were freed from: its cost follows
// what changed. The first pass of a store counts the references once, from
// one snapshot, and weighs every chunk and pack.
func (s *Store) Reclaim() (*GCResult, error) {
	s.reclaimMu.Lock()
	defer s.reclaimMu.Unlock()
	s.live.turn()
	if !s.refs.Built() {
		if err := s.countRefs(); err != nil {
			return nil, fmt.Errorf("reclaim: %w", err)
		}
	}
	res := &GCResult{}
	freed, err := s.freeCandidates(res)
	if err != nil {
		return res, fmt.Errorf("reclaim: %w", err)
	}
	sealed, err := s.sealedPacks()
	if err != nil {
		return res, fmt.Errorf("reclaim: %w", err)
	}
	if cur, appending := s.packs.Current(); appending && freed[cur] {
		s.sealPack(cur) // it can go like any other now
		sealed = append(sealed, cur)
	}
	var compact []uint32
	live := map[uint32][]meta.Record{}
	for _, id := range sealed {
		st, err := os.Stat(s.packs.Path(id))
		if err != nil {
			delete(s.garbage, id) // evicted meanwhile
			continue
		}
		if float64(s.garbage[id]) < packGarbageRatio*float64(st.Size()) {
			continue
		}
		if live[id], err = s.index.InPack(id); err != nil {
			return res, fmt.Errorf("reclaim: %w", err)
		}
		compact = append(compact, id)
	}
	if err := s.sweepPacks(compact, live, res); err != nil {
		return res, fmt.Errorf("reclaim: %w", err)
	}
	if err := s.db.RunValueLogGC(0.5); err == nil {
		res.ValueLogRewrites++
	}
	return res, nil
}

// countRefs counts the references of every chunk from one snapshot (see
// refs), and what every checkpoint holds (see totals), makes every indexed
// chunk no record names a candidate, and counts the garbage of every
// sealed pack: the store's one full pass.
func (s *Store) countRefs() error {
	counts := map[usage.Key]int32{}
	y := usage.NewTally()
	start := func() { s.refs.Start(); s.usage.Start() }
	err := s.ns.SnapshotFrom(start, func(snap *meta.Namespace) error {
		if err := snap.ScanEntries(y.Entry); err != nil {
			return err
		}
		return snap.ScanRecords(func(in *meta.Inode) error {
			for _, c := range in.Content.Chunks {
				counts[usage.KeyOf(c.Hash)]++
			}
			y.Record(in)
			return nil
		})
	})
	if err != nil {
		s.refs.Abandon()
		s.usage.Abandon()
		return err
	}
	s.usage.Install(y)
	sealed, err := s.sealedPacks() // every record of these is indexed now
	if err != nil {
		return err
	}
	used := map[uint32]int64{}
	var unnamed []chunk.Hash
	err = s.index.Scan(func(h chunk.Hash, loc pack.Loc, err error) error {
		if err != nil {
			s.log.Warn("reclaim: chunk left in place", "chunk", h.String(), "err", err)
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
	s.refs.Install(counts, unnamed)
	s.garbage = map[uint32]int64{}
	for _, id := range sealed {
		if st, err := os.Stat(s.packs.Path(id)); err == nil {
			s.garbage[id] = max(st.Size()-used[id], 0)
		}
	}
	return nil
}

// freeCandidates deletes the index entries of the candidates no record
// names that liveChunks does not keep, counts them as their packs'
// garbage, and returns the packs it freed from. Stores wait meanwhile, so
// none can find a chunk by dedup as it goes.
//
// A candidate a delta needs stays, unless every delta that needs it goes
// in this pass: versions removed together (rotations that piled up between
// two passes) go together, a chain's deltas deleted before their
// references, so that a crash in between leaves no delta without one.
func (s *Store) freeCandidates(res *GCResult) (map[uint32]bool, error) {
	candidates := s.refs.Take()
	if len(candidates) == 0 {
		return nil, nil
	}
	for i := range s.putLocks {
		s.putLocks[i].Lock()
		defer s.putLocks[i].Unlock()
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	var free []meta.Record // this round's
	var needed []neededChunk
	var kept []chunk.Hash
	s.refs.Lock()
	res.Weighed = int64(len(candidates))
	for h := range candidates {
		if s.refs.NamedLocked(h) {
			continue
		}
		if keep, recent := s.live.keepsLocked(h); keep {
			kept = append(kept, h)
			if recent {
				res.Recent++
			}
			continue
		}
		loc, err := s.index.Get(h)
		if errors.Is(err, meta.ErrNoChunk) {
			continue // deleted before, or evicted to a bucket
		}
		var deps []chunk.Hash
		if err == nil && s.hasDeltas.Load() {
			deps, err = s.index.Dependents(h)
		}
		if err != nil {
			s.refs.Unlock()
			return nil, err
		}
		if len(deps) > 0 {
			needed = append(needed, neededChunk{meta.Record{Hash: h, Loc: loc}, deps})
			continue
		}
		free = append(free, meta.Record{Hash: h, Loc: loc})
	}
	s.refs.Unlock()
	for _, h := range kept {
		s.refs.Keep(h)
	}
	in := map[uint32]bool{}
	freed := map[chunk.Hash]bool{}
	for round := 0; len(free) > 0; round++ {
		refs, err := s.index.Delete(free)
		if err != nil {
			return nil, err
		}
		for _, r := range free {
			freed[r.Hash] = true
			in[r.Loc.Pack] = true
			s.garbage[r.Loc.Pack] += pack.RecordHeader + int64(r.Loc.Len)
			res.Chunks++
			res.ChunkBytes += int64(r.Loc.Len)
		}
		for _, ref := range refs { // a delta gone: its reference may be garbage now
			if !freed[ref] {
				s.refs.Keep(ref)
			}
		}
		free = nil
		rest := needed[:0]
		for _, n := range needed {
			if n.neededOnlyBy(freed) {
				free = append(free, n.Record)
			} else {
				rest = append(rest, n)
			}
		}
		needed = rest
		if round == MaxChain && len(free) > 0 { // a longer chain is damage: the next pass goes on
			for _, r := range free {
				s.refs.Keep(r.Hash)
			}
			break
		}
	}
	return in, nil
}

// neededChunk is a candidate chunk and the deltas that need it.
type neededChunk struct {
	meta.Record
	deps []chunk.Hash
}

func (n neededChunk) neededOnlyBy(freed map[chunk.Hash]bool) bool {
	for _, d := range n.deps {
		if !freed[d] {
			return false
		}
	}
	return true
}

// ReclaimNow is Reclaim for a user who asked for the space now: while a
// pass keeps chunks only for being recent, it waits for their generation
// to age and runs another, three passes at most (about five seconds).
func (s *Store) ReclaimNow() (*GCResult, error) {
	total := &GCResult{}
	for pass := 0; ; pass++ {
		res, err := s.Reclaim()
		if res != nil {
			total.add(res)
		}
		if err != nil || res.Recent == 0 || pass == 2 {
			return total, err
		}
		time.Sleep(s.live.minAge)
	}
}

// add counts what o freed into r; Recent is o's, the last pass's.
func (r *GCResult) add(o *GCResult) {
	r.Chunks += o.Chunks
	r.ChunkBytes += o.ChunkBytes
	r.Inodes += o.Inodes
	r.PacksRewritten += o.PacksRewritten
	r.PacksRemoved += o.PacksRemoved
	r.PackBytesFreed += o.PackBytesFreed
	r.ValueLogRewrites += o.ValueLogRewrites
	r.Recent = o.Recent
}

// Frozen calls fn with a snapshot of the namespace (see
// meta.Namespace.Snapshot) while no reclaim runs: every chunk a record of
// the snapshot references stays while fn runs, so a check of a store in
// use sees one consistent state. Reclaim waits for fn, and so does what
// runs Unfrozen.
func (s *Store) Frozen(fn func(*meta.Namespace) error) error {
	s.reclaimMu.Lock()
	defer s.reclaimMu.Unlock()
	return s.ns.Snapshot(fn)
}

// Unfrozen runs fn while no Frozen check runs: what removes a file a
// snapshot may name (a staged file) waits for the check.
func (s *Store) Unfrozen(fn func() error) error {
	s.reclaimMu.Lock()
	defer s.reclaimMu.Unlock()
	return fn()
}

// GC is Reclaim for a store nothing else uses: it also deletes the inode
// records no directory reaches (a crash can leave them), rewrites the pack
// last appended to, and flattens Badger's tables so that its value-log GC
// returns what the deletions freed.
func (s *Store) GC() (*GCResult, error) {
	s.reclaimMu.Lock()
	defer s.reclaimMu.Unlock()
	s.packs.Seal() // records copied below go to a pack that is not a candidate
	sealed, err := s.sealedPacks()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	inodes, chunks, err := s.reachable()
	if err != nil {
		return nil, fmt.Errorf("gc mark: %w", err)
	}
	res := &GCResult{}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err = s.ns.InodeKeys(func(key []byte) error {
		if ino, ok := meta.InodeOfKey(key); !ok || inodes[ino] {
			return nil
		}
		res.Inodes++
		return wb.Delete(key)
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("gc sweep: %w", err)
	}
	live, err := s.sweepChunks(chunks, res)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	if err := s.sweepPacks(sealed, live, res); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	// Compaction turns deletions into discard statistics the value-log GC uses.
	if err := s.db.Flatten(1); err != nil {
		s.log.Warn("gc: flatten", "err", err)
	}
	for {
		err := s.db.RunValueLogGC(0.3)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("gc value log: %w", err)
		}
		res.ValueLogRewrites++
	}
	return res, nil
}

// reachable walks the namespace from the root and returns every reachable
// inode number and every chunk a reachable file references.
func (s *Store) reachable() (map[uint64]bool, map[chunk.Hash]struct{}, error) {
	inodes := map[uint64]bool{meta.RootIno: true}
	chunks := map[chunk.Hash]struct{}{}
	err := s.ns.Walk(meta.RootIno, func(rel string, in *meta.Inode) error {
		inodes[in.Ino] = true
		for _, c := range in.Content.Chunks {
			chunks[c.Hash] = struct{}{}
		}
		return nil
	})
	return inodes, chunks, err
}

// sweepChunks deletes the index entries of the chunks not in referenced
// that liveChunks does not keep, and returns the live records by pack.
// Stores wait meanwhile, so none can find a chunk by dedup as it goes.
func (s *Store) sweepChunks(referenced map[chunk.Hash]struct{}, res *GCResult) (map[uint32][]meta.Record, error) {
	live := map[uint32][]meta.Record{}
	var dead []meta.Record
	err := s.index.Scan(func(h chunk.Hash, loc pack.Loc, err error) error {
		switch _, ok := referenced[h]; {
		case err != nil:
			s.log.Warn("reclaim: chunk left in place", "chunk", h.String(), "err", err)
		case ok:
			live[loc.Pack] = append(live[loc.Pack], meta.Record{Hash: h, Loc: loc})
		default:
			dead = append(dead, meta.Record{Hash: h, Loc: loc})
		}
		return nil
	})
	if err != nil || len(dead) == 0 {
		return live, err
	}
	refOf := map[chunk.Hash]chunk.Hash{}
	if err := s.index.References(func(h, ref chunk.Hash) error { refOf[h] = ref; return nil }); err != nil {
		return live, err
	}
	for i := range s.putLocks {
		s.putLocks[i].Lock()
		defer s.putLocks[i].Unlock()
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	var doomed []meta.Record
	for _, r := range dead {
		if keep, recent := s.live.keepsLocked(r.Hash); keep {
			live[r.Loc.Pack] = append(live[r.Loc.Pack], r)
			referenced[r.Hash] = struct{}{}
			if recent {
				res.Recent++
			}
			continue
		}
		doomed = append(doomed, r)
	}
	needed := neededReferences(referenced, refOf)
	var freed []meta.Record
	for _, r := range doomed {
		if _, ok := needed[r.Hash]; ok {
			live[r.Loc.Pack] = append(live[r.Loc.Pack], r)
			continue
		}
		freed = append(freed, r)
		if res.garbageIn == nil {
			res.garbageIn = map[uint32]bool{}
		}
		res.garbageIn[r.Loc.Pack] = true
		res.Chunks++
		res.ChunkBytes += int64(r.Loc.Len)
	}
	_, err = s.index.Delete(freed) // what they needed is not kept above
	return live, err
}

// neededReferences are the chunks the deltas among kept need, and what
// those need in turn, as refOf (each delta's reference) says.
func neededReferences(kept map[chunk.Hash]struct{}, refOf map[chunk.Hash]chunk.Hash) map[chunk.Hash]struct{} {
	needed := map[chunk.Hash]struct{}{}
	if len(refOf) == 0 {
		return needed
	}
	for h := range kept {
		for steps := 0; steps <= MaxChain; steps++ { // a longer chain is damage: fsck says so
			ref, ok := refOf[h]
			if !ok {
				break
			}
			if _, seen := needed[ref]; seen {
				break
			}
			needed[ref] = struct{}{}
			h = ref
		}
	}
	return needed
}

// sealPack ends appends to pack id, the current one, so that it can go
// like any other once the appends under way are indexed.
func (s *Store) sealPack(id uint32) {
	s.evictMu.Lock() // appends and their index entries happen under RLock
	if cur, appending := s.packs.Current(); appending && cur == id {
		s.packs.Seal()
	}
	s.evictMu.Unlock()
}

// sealedPacks lists the packs not being appended to. Taken before the
// index is read, it names no pack a chunk can be appended to after, and
// every record of the packs it names is indexed by then: a chunk's append
// and its index entry happen under evictMu's read lock, so once the write
// lock was had here, a record appended to a pack that filled meanwhile
// has its entry, and the pack's live records are all in the index.
func (s *Store) sealedPacks() ([]uint32, error) {
	s.evictMu.Lock()
	ids, err := s.packs.List()
	cur, appending := s.packs.Current()
	s.evictMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	out := ids[:0]
	for _, id := range ids {
		if !appending || id != cur {
			out = append(out, id)
		}
	}
	return out, nil
}

// sweepPacks deletes the sealed packs with no live record, and copies the
// live records of those mostly garbage to the current pack before deleting
// them.
func (s *Store) sweepPacks(sealed []uint32, live map[uint32][]meta.Record, res *GCResult) error {
	var doomed []uint32
	var moved []meta.Move
	limit := newRateLimit(compactRate)
	for _, id := range sealed {
		st, err := os.Stat(s.packs.Path(id))
		if err != nil {
			continue // evicted meanwhile
		}
		var used int64
		for _, r := range live[id] {
			used += pack.RecordHeader + int64(r.Loc.Len)
		}
		if used > 0 && float64(st.Size()-used) < packGarbageRatio*float64(st.Size()) {
			continue
		}
		m, err := s.copyRecords(live[id], limit)
		if err != nil {
			s.log.Warn("reclaim: pack kept", "pack", s.packs.Path(id), "err", err)
			continue
		}
		moved = append(moved, m...)
		if used > 0 {
			res.PacksRewritten++
		}
		res.PackBytesFreed += st.Size() - used
		doomed = append(doomed, id)
	}
	if len(doomed) == 0 {
		return s.db.Sync() // the deletions of sweepChunks
	}
	return s.dropPacks(doomed, moved, res)
}

// copyRecords appends the values of recs to the current pack, with no
// index change yet.
func (s *Store) copyRecords(recs []meta.Record, limit *rateLimit) ([]meta.Move, error) {
	var out []meta.Move
	for _, r := range recs {
		s.evictMu.RLock() // the pack is not evicted while read
		var to pack.Loc
		err := s.packs.Read(r.Hash, r.Loc, func(val []byte) error {
			if err := chunk.Check(r.Hash, val); err != nil {
				return err // a damaged record is not copied into a sound pack
			}
			var err error
			to, err = s.packs.Append(r.Hash, val)
			return err
		})
		s.evictMu.RUnlock()
		if err != nil {
			return nil, fmt.Errorf("chunk %s: %w", r.Hash.Short(), err)
		}
		out = append(out, meta.Move{Hash: r.Hash, From: r.Loc, To: to})
		limit.wait(int64(r.Loc.Len))
	}
	return out, nil
}

// dropPacks points the index at the copies of the moved records that still
// stand where they were copied from, and deletes the doomed packs: the
// copies and the new index entries are durable first, so a crash leaves
// every chunk readable from one pack or the other.
func (s *Store) dropPacks(doomed []uint32, moved []meta.Move, res *GCResult) error {
	if err := s.packs.Sync(); err != nil {
		return err
	}
	s.evictMu.Lock() // no read in between, nor an eviction
	defer s.evictMu.Unlock()
	if err := s.index.Move(moved); err != nil {
		return fmt.Errorf("index copied records: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	for _, id := range doomed {
		if err := s.packs.Remove(id); err != nil {
			return err
		}
		res.PacksRemoved++
		if err := s.packRemoved(id); err != nil {
			return err
		}
	}
	return nil
}

// rateLimit spaces out work to at most rate bytes a second.
type rateLimit struct {
	rate  int64
	start time.Time
	done  int64
}

func newRateLimit(rate int64) *rateLimit { return &rateLimit{rate: rate, start: time.Now()} }

func (r *rateLimit) wait(n int64) {
	r.done += n
	ahead := time.Duration(r.done*int64(time.Second)/r.rate) - time.Since(r.start)
	if ahead > 0 {
		time.Sleep(ahead)
	}
}
