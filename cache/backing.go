package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ckptfs/ckptfs/cache/bucket"
	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sync/singleflight"
)

// BackingOptions put a store in front of a bucket: the bucket holds every
// checkpoint, and the store is a bounded cache of the chunks this mount
// has read or written, plus the namespace.
type BackingOptions struct {
	Remote *bucket.Remote
	// DiskBytes bounds the chunk packs on local disk; chunks the bucket
	// holds are evicted, oldest pack first. 0: no bound.
	DiskBytes int64
	// MetadataTTL is how often the bucket's checkpoint list is read, so
	// checkpoints published by other mounts appear (default 10 s).
	MetadataTTL time.Duration
}

// Keys of the bucket state in the database.
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

// bucketBacking runs the store's side of a bucket: write-back of chunks
// and manifests (writeback.go), fetches of missing chunks (Store.loadChunk),
// import of other mounts' checkpoints (refresh.go) and eviction (evict.go).
type bucketBacking struct {
	s       *Store
	r       *bucket.Remote
	opts    BackingOptions
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

// attachBucket makes the bucket of o the store's backing: it records the
// bucket (a store caches one bucket for life), imports the bucket's
// checkpoints and starts the background work.
func (s *Store) attachBucket(o BackingOptions) error {
	if o.MetadataTTL <= 0 {
		o.MetadataTTL = 10 * time.Second
	}
	if known := s.RemoteURL(); known != "" && known != o.Remote.String() {
		return fmt.Errorf("store %s caches %s, not %s", s.dir, known, o.Remote)
	}
	id, err := s.storeID()
	if err != nil {
		return err
	}
	if err := s.setMeta(meta.KeyRemoteURL, []byte(o.Remote.String())); err != nil {
		return err
	}
	if o.DiskBytes > 0 {
		// Evict in steps of an eighth of the cache.
		s.packs.SetTarget(min(pack.TargetSize, max(o.DiskBytes/8, 4*chunk.MaxSize)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &bucketBacking{s: s, r: o.Remote, opts: o, storeID: id,
		uploads: make(chan chunk.Hash, 64), evictCh: make(chan struct{}, 1), refused: map[string]string{}, ctx: ctx, cancel: cancel}
	b.dirty.Store(true) // publish what an earlier session or a command left
	if err := b.refresh(ctx); err != nil {
		cancel()
		return err
	}
	s.bucket = b
	for range uploadParallel {
		b.spawn(b.uploadLoop)
	}
	b.spawn(func() { b.every(publishInterval, nil, "publish to the bucket failed; retrying", b.publishChanged) })
	b.spawn(func() { b.every(o.MetadataTTL, nil, "read checkpoints from the bucket", b.refresh) })
	b.spawn(func() { b.every(evictCheckInterval, b.evictCh, "evict from the local cache", b.evict) })
	return nil
}

func (b *bucketBacking) spawn(fn func()) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
}

// every runs fn each interval and whenever kick fires, until the backing
// stops, logging its failures as what.
func (b *bucketBacking) every(interval time.Duration, kick <-chan struct{}, what string, fn func(context.Context) error) {
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
			b.s.log.Warn(what, "remote", b.r, "err", err)
		}
	}
}

// stop publishes what is left, for up to a minute, and ends the background
// work; what is still unpublished is published by the next session.
func (b *bucketBacking) stop() {
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	if err := b.publishChanged(ctx); err != nil {
		b.s.log.Warn("unpublished changes left for the next mount", "remote", b.r, "err", err)
	}
	cancel()
	b.cancel()
	b.wg.Wait()
}

// RemoteURL is the bucket the store caches, "" if none.
func (s *Store) RemoteURL() string {
	v, _ := s.getMeta(meta.KeyRemoteURL)
	return string(v)
}

// storeID names the store in leases; made once.
func (s *Store) storeID() (string, error) {
	if v, err := s.getMeta(meta.KeyStoreID); err == nil {
		return string(v), nil
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	return id, s.setMeta(meta.KeyStoreID, []byte(id))
}

func (s *Store) getMeta(key string) ([]byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

func (s *Store) setMeta(key string, v []byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(key), v) }); err != nil {
		return fmt.Errorf("store %s: set %s: %w", s.dir, key, err)
	}
	return nil
}

// uploaded reports whether the bucket is known to hold chunk h.
func (s *Store) uploaded(h chunk.Hash) bool {
	_, err := s.getMeta(string(meta.UploadedKey(h)))
	return err == nil
}

// markBucketOnly records the chunks of an imported manifest that this
// store does not hold as held by the bucket, where reads will fetch them.
// A chunk this store holds is left alone: only its own upload (or a fetch)
// may say the bucket has it, or a manifest naming a chunk the bucket lacks
// would let eviction drop this store's only copy. Stores of new chunks
// wait meanwhile (PutChunk clears the mark of a chunk it stores).
func (s *Store) markBucketOnly(hs []chunk.Hash) error {
	for i := range s.putLocks {
		s.putLocks[i].Lock()
		defer s.putLocks[i].Unlock()
	}
	var absent []chunk.Hash
	for _, h := range hs {
		if _, err := s.chunkLoc(h); errors.Is(err, errChunkMissing) {
			absent = append(absent, h)
		} else if err != nil {
			return err
		}
	}
	return s.markUploaded(absent...)
}

// markUploaded records that the bucket holds the chunks.
func (s *Store) markUploaded(hs ...chunk.Hash) error {
	s.cachesBucket.Store(true)
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, h := range hs {
		if err := wb.Set(meta.UploadedKey(h), nil); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// checkpointStates reads the state of every checkpoint the bucket knows.
func (s *Store) checkpointStates() (map[string]checkpointState, error) {
	out := map[string]checkpointState{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte(meta.PrefixCheckpoint)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var st checkpointState
			err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &st) })
			if err != nil {
				return fmt.Errorf("state of %s: %w", it.Item().Key(), err)
			}
			out[strings.TrimPrefix(string(it.Item().Key()), meta.PrefixCheckpoint)] = st
		}
		return nil
	})
	return out, err
}

// checkpointState reads the state of one checkpoint; known is false when
// the store has none.
func (s *Store) checkpointState(name string) (st checkpointState, known bool, err error) {
	v, err := s.getMeta(meta.PrefixCheckpoint + name)
	if errors.Is(err, badger.ErrKeyNotFound) {
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

func (s *Store) setCheckpointState(name string, st *checkpointState) error {
	key := []byte(meta.PrefixCheckpoint + name)
	if st == nil {
		return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(key) })
	}
	v, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.setMeta(string(key), v)
}
