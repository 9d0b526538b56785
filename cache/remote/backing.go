package remote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"golang.org/x/sync/singleflight"
)

// Local is what the bucket side uses of the store it stands in front of:
// its namespace and records of the bucket, and its chunks as stored, by
// upload state and by pack.
type Local interface {
	Namespace() *meta.Namespace
	Dir() string
	Logger() *slog.Logger
	RemoteURL() string
	SetBacking(b store.Backing, url string) error
	Sync() error
	SyncChunks() error
	HasChunk(h chunk.Hash) bool
	Uploaded(h chunk.Hash) bool
	MarkUploaded(hs ...chunk.Hash) error
	MarkBucketOnly(hs []chunk.Hash) error
	StoredValue(h chunk.Hash, decode bool) ([]byte, error)
	AddFetched(ref chunk.Ref, val []byte) ([]byte, error)
	Packs() ([]store.PackFile, error)
	SetPackTarget(n int64)
	EvictPack(id uint32, droppable func(chunk.Hash) bool) (bool, error)
}

// Options put a store in front of a bucket: the bucket holds every
// checkpoint, and the store is a bounded cache of the chunks this mount
// has read or written, plus the namespace.
type Options struct {
	// DiskBytes bounds the chunk packs on local disk; chunks the bucket
	// holds are evicted, oldest pack first. 0: no bound.
	DiskBytes int64
	// MetadataTTL is how often the bucket's checkpoint list is read, so
	// checkpoints published by other mounts appear (default 10 s).
	MetadataTTL time.Duration
	Logger      *slog.Logger
	// Metrics counts the bucket traffic; nil: counted for nobody.
	Metrics *Metrics
}

const (
	uploadParallel  = 8 // chunk uploads in flight
	publishInterval = time.Second
)

// checkpointState is what the store knows of a top-level checkpoint in the
// bucket: whether this store writes it (holds its lease) or imported it
// from another, and the digest of its manifest as last published or
// imported. A local manifest with another digest has changes to publish.
type checkpointState struct {
	Owned   bool   `json:"owned,omitempty"`
	ETag    string `json:"etag,omitempty"`    // of the imported manifest object
	Digest  string `json:"digest,omitempty"`  // of the manifest; "" while an import is unfinished
	Refused string `json:"refused,omitempty"` // digest of local changes to an imported checkpoint, reported once
}

// Backing runs the store's side of a bucket: write-back of chunks and
// manifests (writeback.go), fetches of missing chunks (fetch.go), import
// of other mounts' checkpoints (refresh.go) and eviction (evict.go).
type Backing struct {
	s       Local
	r       *Remote
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	storeID string

	uploads chan chunk.Hash // chunks written, to upload in the background
	upload  singleflight.Group
	dirty   atomic.Bool // the namespace changed since the last publish
	pubMu   sync.Mutex  // one publish at a time
	evictCh chan struct{}
	refused map[string]string // checkpoint -> ETag of a manifest refused, used by refresh only

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ store.Backing = (*Backing)(nil)

// Attach puts store s in front of bucket r: it records the bucket (a store
// caches one bucket for life), imports the bucket's checkpoints and starts
// the background work. Closing the store stops it.
func Attach(s Local, r *Remote, o Options) (*Backing, error) {
	b, err := newBacking(s, r, o)
	if err != nil {
		return nil, err
	}
	b.dirty.Store(true) // publish what an earlier session or a command left
	if err := b.refresh(b.ctx); err != nil {
		b.cancel()
		return nil, err
	}
	if err := s.SetBacking(b, r.String()); err != nil {
		b.cancel()
		return nil, err
	}
	for range uploadParallel {
		b.spawn(b.uploadLoop)
	}
	b.spawn(func() { b.every(publishInterval, nil, "publish to the bucket failed; retrying", b.publishChanged) })
	b.spawn(func() { b.every(o.MetadataTTL, nil, "read checkpoints from the bucket", b.refresh) })
	b.spawn(func() { b.every(evictCheckInterval, b.evictCh, "evict from the local cache", b.evict) })
	return b, nil
}

// newBacking makes the backing of s by r with no background work.
func newBacking(s Local, r *Remote, o Options) (*Backing, error) {
	if known := s.RemoteURL(); known != "" && known != r.String() {
		return nil, fmt.Errorf("store %s caches %s, not %s", s.Dir(), known, r)
	}
	if o.MetadataTTL <= 0 {
		o.MetadataTTL = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	id, err := storeID(s)
	if err != nil {
		return nil, err
	}
	if o.DiskBytes > 0 {
		s.SetPackTarget(max(o.DiskBytes/8, 4*chunk.MaxSize)) // evict in steps of an eighth
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Backing{s: s, r: r, opts: o, log: o.Logger, metrics: o.Metrics, storeID: id,
		uploads: make(chan chunk.Hash, 64), evictCh: make(chan struct{}, 1), refused: map[string]string{},
		ctx: ctx, cancel: cancel}, nil
}

func (b *Backing) spawn(fn func()) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
}

// every runs fn each interval and whenever kick fires, until the backing
// stops, logging its failures as what.
func (b *Backing) every(interval time.Duration, kick <-chan struct{}, what string, fn func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-kick:
		case <-b.ctx.Done():
			return
		}
		if err := fn(b.ctx); err != nil && b.ctx.Err() == nil {
			b.log.Warn(what, "remote", b.r, "err", err)
		}
	}
}

// Changed marks the namespace as having changes to publish.
func (b *Backing) Changed() { b.dirty.Store(true) }

// Close publishes what is left, for up to a minute, and ends the
// background work; what is still unpublished is published by the next
// session.
func (b *Backing) Close() error {
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	if err := b.publishChanged(ctx); err != nil {
		b.log.Warn("unpublished changes left for the next mount", "remote", b.r, "err", err)
	}
	cancel()
	b.cancel()
	b.wg.Wait()
	return nil
}

// storeID names store s in leases; made once.
func storeID(s Local) (string, error) {
	if v, err := s.Namespace().Value(meta.KeyStoreID); err == nil {
		return string(v), nil
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	return id, s.Namespace().SetValue(meta.KeyStoreID, []byte(id))
}

// checkpointStates reads the state of every checkpoint the bucket knows.
func (b *Backing) checkpointStates() (map[string]checkpointState, error) {
	vals, err := b.s.Namespace().Values(meta.PrefixCheckpoint)
	if err != nil {
		return nil, err
	}
	out := map[string]checkpointState{}
	for name, v := range vals {
		var st checkpointState
		if err := json.Unmarshal(v, &st); err != nil {
			return nil, fmt.Errorf("state of %s: %w", name, err)
		}
		out[name] = st
	}
	return out, nil
}

// checkpointState reads the state of one checkpoint; known is false when
// the store has none.
func (b *Backing) checkpointState(name string) (st checkpointState, known bool, err error) {
	v, err := b.s.Namespace().Value(meta.PrefixCheckpoint + name)
	if errors.Is(err, meta.ErrNoValue) {
		return st, false, nil
	}
	if err == nil {
		err = json.Unmarshal(v, &st)
	}
	if err != nil {
		return st, false, fmt.Errorf("state of %s: %w", name, err)
	}
	return st, true, nil
}

func (b *Backing) setCheckpointState(name string, st *checkpointState) error {
	var v []byte
	if st != nil {
		var err error
		if v, err = json.Marshal(st); err != nil {
			return err
		}
	}
	return b.s.Namespace().SetValue(meta.PrefixCheckpoint+name, v)
}
