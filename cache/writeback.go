package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/bucket"
	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/zeebo/blake3"
)

// Write-back: chunks upload in the background as they are stored, by
// uploadParallel workers; a writer that outruns them waits for a free slot
// in the queue. Publishing a checkpoint uploads whatever chunks of it are
// not in the bucket yet and then puts its manifest. A file's close and
// fsync publish (Store.Publish); other namespace changes are published
// within publishInterval, and failed publishes are retried as often.

// queueUpload hands a newly stored chunk to the upload workers.
func (b *bucketBacking) queueUpload(h chunk.Hash) {
	select {
	case b.uploads <- h:
	case <-b.ctx.Done():
	}
}

func (b *bucketBacking) uploadLoop() {
	for {
		select {
		case h := <-b.uploads:
			if err := b.uploadChunk(b.ctx, h); err != nil {
				b.s.log.Debug("background upload failed; publish retries it", "chunk", h.String(), "err", err)
			}
		case <-b.ctx.Done():
			return
		}
	}
}

// uploadChunk puts chunk h in the bucket once, however many ask at once.
func (b *bucketBacking) uploadChunk(ctx context.Context, h chunk.Hash) error {
	if b.s.uploaded(h) {
		return nil
	}
	_, err, _ := b.upload.Do(string(h[:]), func() (any, error) {
		// No eviction lock: a chunk not uploaded pins its pack. The value
		// was encoded from bytes of hash h by this store; its checksum
		// catches damage since, and every reader verifies the hash. Nor is
		// the bucket asked first: a new chunk is new there too, mostly.
		val, err := b.s.storedValue(h, false)
		if err == nil {
			err = b.r.Put(ctx, b.r.ChunkKey(h), val)
		}
		if err == nil {
			b.s.metrics.uploadedBytes.Add(float64(len(val)))
			err = b.s.markUploaded(h)
		}
		if err == nil {
			b.kickEvict()
		}
		return nil, err
	})
	return err
}

// Publish makes the committed changes of top-level checkpoint name visible
// in the bucket: it returns once the checkpoint's chunks and manifest are
// there. Without a bucket it does nothing.
func (s *Store) Publish(ctx context.Context, name string) error {
	if s.bucket == nil {
		return nil
	}
	b := s.bucket
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	st, known, err := s.checkpointState(name)
	if err == nil {
		err = b.publishOne(ctx, name, st, known)
	}
	if err != nil {
		return fmt.Errorf("publish to %s: %v", b.r, err) // EIO, whatever the cause
	}
	return nil
}

// publishChanged publishes every top-level checkpoint whose manifest
// differs from the one last published, and withdraws the manifests of
// checkpoints this store wrote and removed.
func (b *bucketBacking) publishChanged(ctx context.Context) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if !b.dirty.Swap(false) {
		return nil
	}
	err := b.publishAll(ctx)
	if err != nil {
		b.dirty.Store(true) // try again
	}
	return err
}

func (b *bucketBacking) publishAll(ctx context.Context) error {
	entries, err := b.s.ReadDir(meta.RootIno)
	if err != nil {
		return err
	}
	states, err := b.s.checkpointStates()
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		st, known := states[e.Name]
		delete(states, e.Name)
		errs = append(errs, b.publishOne(ctx, e.Name, st, known))
	}
	for name, st := range states {
		if st.Owned { // written here and removed since
			errs = append(errs, b.withdraw(ctx, name))
		}
	}
	return errors.Join(errs...)
}

// publishOne publishes checkpoint name if its manifest differs from the
// one last published. Changes to a checkpoint another store wrote are
// refused, once for each version.
func (b *bucketBacking) publishOne(ctx context.Context, name string, st checkpointState, known bool) error {
	s := b.s
	if strings.HasPrefix(name, hiddenPrefix) || (known && !st.Owned && st.Digest == "") {
		return nil // being built or imported
	}
	m, js, err := s.buildManifest(name)
	if errors.Is(err, syscall.ENOENT) {
		return nil // removed meanwhile; publishAll withdraws it
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	d := manifestDigest(js)
	if st.Digest == d {
		return nil
	}
	if known && !st.Owned {
		if st.Refused == d {
			return nil
		}
		st.Refused = d
		if err := s.setCheckpointState(name, &st); err != nil {
			return err
		}
		return fmt.Errorf("%s was written by another mount: local changes to it are not published", name)
	}
	if !st.Owned {
		if err := b.acquireLease(ctx, name); err != nil {
			return err
		}
	}
	if err := b.publishCheckpoint(ctx, m, js); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := s.setCheckpointState(name, &checkpointState{Owned: true, Digest: d}); err != nil {
		return err
	}
	s.log.Debug("published", "checkpoint", name, "remote", b.r)
	return nil
}

// publishCheckpoint uploads the chunks of m the bucket lacks, then m.
func (b *bucketBacking) publishCheckpoint(ctx context.Context, m *bucket.Manifest, js []byte) error {
	_, err := eachChunk(ctx, m, func(int64) {}, func(ctx context.Context, ref chunk.Ref) (int64, error) {
		return 0, b.uploadChunk(ctx, ref.Hash)
	})
	if err != nil {
		return err
	}
	return b.r.Put(ctx, b.r.ManifestKey(m.Name), js)
}

// withdraw removes the manifest and then the lease of a checkpoint this
// store wrote and removed.
func (b *bucketBacking) withdraw(ctx context.Context, name string) error {
	if err := b.r.Remove(ctx, b.r.ManifestKey(name)); err != nil {
		return err
	}
	if err := b.r.Remove(ctx, b.r.LeaseKey(name)); err != nil {
		return err
	}
	return b.s.setCheckpointState(name, nil)
}

// lease is the object that makes a store the one writer of a checkpoint.
type lease struct {
	Store string    `json:"store"`
	Host  string    `json:"host"`
	Since time.Time `json:"since"`
}

// claim takes the lease of a new top-level name before it is created, so
// that two mounts never write the same checkpoint.
func (s *Store) claim(parent uint64, name string) error {
	if s.bucket == nil || parent != meta.RootIno || strings.HasPrefix(name, hiddenPrefix) {
		return nil
	}
	return s.bucket.acquireLease(s.bucket.ctx, name)
}

// acquireLease creates the lease object of name if there is none (a
// conditional put: of two mounts racing, one wins), and records the
// checkpoint as this store's. A lease held by another store is EEXIST.
func (b *bucketBacking) acquireLease(ctx context.Context, name string) error {
	if cur, _, err := b.s.checkpointState(name); err != nil || cur.Owned {
		return err
	}
	if err := b.s.claimLease(ctx, b.r, b.storeID, name); err != nil {
		return err
	}
	return b.s.setCheckpointState(name, &checkpointState{Owned: true})
}

// claimLease makes store id the writer of checkpoint name in r, unless
// another store is: then EEXIST, naming the holder.
func (s *Store) claimLease(ctx context.Context, r *bucket.Remote, id, name string) error {
	host, _ := os.Hostname()
	js, _ := json.Marshal(lease{Store: id, Host: host, Since: time.Now().UTC()})
	won, err := r.PutIfAbsent(ctx, r.LeaseKey(name), js)
	if err != nil {
		return fmt.Errorf("lease of %s: %w", name, err)
	}
	if won {
		return nil
	}
	data, err := r.Get(ctx, r.LeaseKey(name), 4096)
	if err != nil {
		return fmt.Errorf("lease of %s: %w", name, err)
	}
	var held lease
	if json.Unmarshal(data, &held) != nil || held.Store != id {
		s.log.Warn("checkpoint is written by another mount", "checkpoint", name, "holder", held.Host, "store", held.Store, "since", held.Since)
		return fmt.Errorf("checkpoint %s is written by another mount (%s): %w", name, held.Host, syscall.EEXIST)
	}
	return nil
}

// manifestDigest tells manifests apart.
func manifestDigest(js []byte) string {
	d := blake3.Sum256(js)
	return fmt.Sprintf("%x", d[:16])
}
