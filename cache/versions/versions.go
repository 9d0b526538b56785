// Package versions finds the versions of a checkpoint file that a training
// run saves one after another, and has the store keep each older version
// as deltas against the one saved after it (see store.StoreAsDeltas):
// reverse deltas, so the version saved last, the one loaded next, stays
// whole. A version is the same file name in a sibling folder
// (checkpoint-100/model.safetensors and checkpoint-200/model.safetensors,
// or one folder deeper: checkpoint-200/model/shard-1.safetensors), the one
// saved most recently before; or the content a file had before it was
// rewritten in place. Chunks pair up where both versions hold the same
// byte range (the same tensor, when the layout did not change).
//
// Nothing of it is on the writer's path: the encoder follows the records
// the namespace commits, waits until they have been still for a while,
// and encodes on a thread of the lowest priority.
package versions

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// Store is what the encoder uses of a store.
type Store interface {
	Namespace() *meta.Namespace
	StoreAsDeltas(ctx context.Context, pairs []store.DeltaPair) (store.DeltaResult, error)
}

// Options tune an Encoder; the zero value gives the defaults.
type Options struct {
	Logger *slog.Logger
	// Quiet is how long the namespace stays unchanged before encoding
	// starts (default 2 s): a run saving every few seconds is not slowed.
	Quiet time.Duration
}

// Bounds of what the encoder remembers and looks at: it forgets every
// place once it knows more than maxPlaces, and ignores a folder of more
// than maxSiblings entries.
const (
	maxPlaces   = 1 << 20
	maxSiblings = 4096
	maxDepth    = 2 // folders between a version folder and its file, plus one
)

// place is where an inode was last given a name.
type place struct {
	parent uint64
	name   string
}

// Encoder stores older versions as deltas in the background.
type Encoder struct {
	st    Store
	ns    *meta.Namespace
	log   *slog.Logger
	quiet time.Duration

	mu sync.Mutex
	// places holds where each inode was named while the encoder ran: a
	// record does not say where it is.
	places map[uint64]place
	// pending are the files whose content changed, with the content they
	// had before, if it was chunked.
	pending map[uint64]*meta.Content

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// Start starts an encoder; Changed must be told of every committed change.
func Start(st Store, o Options) *Encoder {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Quiet <= 0 {
		o.Quiet = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Encoder{st: st, ns: st.Namespace(), log: o.Logger, quiet: o.Quiet,
		places: map[uint64]place{}, pending: map[uint64]*meta.Content{},
		kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go e.loop(ctx)
	return e
}

// Close stops the encoder; what it had not encoded stays as it is.
func (e *Encoder) Close() {
	e.cancel()
	<-e.done
}

func isFile(in *meta.Inode) bool { return in != nil && in.Mode&syscall.S_IFMT == syscall.S_IFREG }

// Changed follows a committed change (meta.Hooks.Records): where records
// are named, and which files got new chunks.
func (e *Encoder) Changed(chs []meta.RecordChange) {
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := false
	for _, c := range chs {
		if c.After == nil {
			if c.Before != nil {
				delete(e.places, c.Before.Ino)
				delete(e.pending, c.Before.Ino)
			}
			continue
		}
		ino := c.After.Ino
		if c.Name != "" {
			if len(e.places) >= maxPlaces {
				e.places = map[uint64]place{}
			}
			parent := c.Parent
			if c.NewParent != 0 {
				parent = c.NewParent
			}
			e.places[ino] = place{parent: parent, name: c.Name}
		}
		if !isFile(c.After) || len(c.After.Content.Chunks) == 0 || c.Before != nil && c.Before.Content.Equal(&c.After.Content) {
			continue
		}
		if _, ok := e.pending[ino]; !ok {
			var before *meta.Content
			if c.Before != nil && len(c.Before.Content.Chunks) > 0 {
				before = &c.Before.Content
			}
			e.pending[ino] = before
		}
		changed = true
	}
	if changed {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
}

// loop encodes what is pending once the namespace has been quiet, on a
// thread of the lowest priority: a training job on the same cores goes
// first.
func (e *Encoder) loop(ctx context.Context) {
	defer close(e.done)
	runtime.LockOSThread() // the thread ends with the loop, and its priority with it
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), 19); err != nil {
		e.log.Debug("delta encoder: lowering priority", "err", err)
	}
	for {
		select {
		case <-e.kick:
		case <-ctx.Done():
			return
		}
		if !e.waitQuiet(ctx) {
			return
		}
		e.mu.Lock()
		pending := e.pending
		e.pending = map[uint64]*meta.Content{}
		e.mu.Unlock()
		var round store.DeltaResult
		start := time.Now()
		for ino, before := range pending {
			if ctx.Err() != nil {
				return
			}
			res := e.encode(ctx, ino, before)
			round.Stored += res.Stored
			round.Before += res.Before
			round.After += res.After
			round.RawBytes += res.RawBytes
		}
		if round.Stored == 0 {
			continue
		}
		e.log.Info("older versions stored as deltas", "files", len(pending), "chunks", round.Stored, "raw_bytes", round.RawBytes,
			"bytes_before", round.Before, "bytes_after", round.After, "took", time.Since(start).Round(time.Millisecond))
	}
}

// waitQuiet waits until no change came for e.quiet; false if ctx ended.
func (e *Encoder) waitQuiet(ctx context.Context) bool {
	t := time.NewTimer(e.quiet)
	defer t.Stop()
	for {
		select {
		case <-e.kick:
			t.Reset(e.quiet)
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// encode stores the version saved before file ino as deltas against it,
// and ino as deltas against the version saved after it: whichever order
// the versions settle in, each is paired with its neighbours once both
// are chunked.
func (e *Encoder) encode(ctx context.Context, ino uint64, before *meta.Content) store.DeltaResult {
	in, err := e.ns.GetInode(ino)
	if !chunked(in, err) {
		return store.DeltaResult{} // gone, or not chunked: nothing to pair
	}
	var pairs []store.DeltaPair
	if before != nil {
		pairs = Pairs(before, &in.Content)
	}
	older, newer, where := e.neighbours(in)
	if chunked(older, nil) && older.Content.Kind == in.Content.Kind {
		pairs = append(pairs, Pairs(&older.Content, &in.Content)...)
	}
	if chunked(newer, nil) && newer.Content.Kind == in.Content.Kind {
		pairs = append(pairs, Pairs(&in.Content, &newer.Content)...)
	}
	if len(pairs) == 0 {
		return store.DeltaResult{}
	}
	res, err := e.st.StoreAsDeltas(ctx, pairs)
	if err != nil && ctx.Err() == nil {
		e.log.Warn("storing older versions as deltas stopped", "ino", ino, "version", where, "err", err)
	}
	if res.Stored > 0 {
		e.log.Debug("older version stored as deltas", "ino", ino, "version", where, "chunks", res.Stored,
			"raw_bytes", res.RawBytes, "bytes_before", res.Before, "bytes_after", res.After)
	}
	return res
}

// chunked reports whether in, read with err, is a file whose content is
// chunks.
func chunked(in *meta.Inode, err error) bool {
	return err == nil && isFile(in) && len(in.Content.Chunks) > 0 && in.Content.Staged == 0
}

// neighbours are the versions of in saved just before and just after it,
// chunked or not, and a description of where: the same path below the
// sibling folders of the nearer of in's two nearest folders that has one,
// by mtime.
func (e *Encoder) neighbours(in *meta.Inode) (before, after *meta.Inode, where string) {
	e.mu.Lock()
	here, ok := e.places[in.Ino]
	e.mu.Unlock()
	if !ok {
		return nil, nil, ""
	}
	tail := []string{here.name}
	dir := here.parent
	for range maxDepth {
		e.mu.Lock()
		up, ok := e.places[dir]
		e.mu.Unlock()
		if !ok {
			return nil, nil, ""
		}
		if before, after = e.siblings(in, up, tail); before != nil || after != nil {
			return before, after, up.name
		}
		tail = append([]string{up.name}, tail...)
		dir = up.parent
	}
	return nil, nil, ""
}

// siblings looks for tail below each folder next to dir.name in
// dir.parent, and returns the files there saved last before in and first
// after it.
func (e *Encoder) siblings(in *meta.Inode, dir place, tail []string) (before, after *meta.Inode) {
	entries, err := e.ns.ReadDir(dir.parent)
	if err != nil || len(entries) > maxSiblings {
		return nil, nil
	}
	for _, d := range entries {
		if d.Name == dir.name || d.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			continue
		}
		f := e.resolve(d.Ino, tail)
		if !isFile(f) || f.Ino == in.Ino {
			continue
		}
		if f.Mtime <= in.Mtime && (before == nil || f.Mtime > before.Mtime) {
			before = f
		}
		if f.Mtime > in.Mtime && (after == nil || f.Mtime < after.Mtime) {
			after = f
		}
	}
	return before, after
}

// resolve is the record at path below folder ino, or nil.
func (e *Encoder) resolve(ino uint64, path []string) *meta.Inode {
	var in *meta.Inode
	for _, name := range path {
		var err error
		if in, err = e.ns.Lookup(ino, name); err != nil {
			return nil
		}
		ino = in.Ino
	}
	return in
}

// Pairs pairs each chunk of older with the chunk of newer that holds the
// same byte range, where they differ: the same tensor in two versions of a
// file whose layout did not change.
func Pairs(older, newer *meta.Content) []store.DeltaPair {
	type span struct{ off, n int64 }
	at := make(map[span]chunk.Hash, len(newer.Chunks))
	var off int64
	for _, c := range newer.Chunks {
		at[span{off, int64(c.Len)}] = c.Hash
		off += int64(c.Len)
	}
	var pairs []store.DeltaPair
	off = 0
	for _, c := range older.Chunks {
		if ref, ok := at[span{off, int64(c.Len)}]; ok && ref != c.Hash {
			pairs = append(pairs, store.DeltaPair{Chunk: c.Hash, Ref: ref})
		}
		off += int64(c.Len)
	}
	return pairs
}
