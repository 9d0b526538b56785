package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

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

// Stored hands a newly stored chunk to the upload workers.
func (b *Backing) Stored(h chunk.Hash) {
	select {
	case b.uploads <- h:
	case <-b.ctx.Done():
	}
}

func (b *Backing) uploadLoop() {
	for {
		select {
		case h := <-b.uploads:
			if err := b.uploadChunk(b.ctx, h); err != nil {
				b.log.Debug("background upload failed; publish retries it", "chunk", h.String(), "err", err)
			}
		case <-b.ctx.Done():
			return
		}
	}
}

// uploadChunk puts chunk h in the bucket once, however many ask at once.
func (b *Backing) uploadChunk(ctx context.Context, h chunk.Hash) error {
	if b.s.Uploaded(h) {
		return nil
	}
	_, err, _ := b.upload.Do(string(h[:]), func() (any, error) {
		// No eviction lock: a chunk not uploaded pins its pack. The value
		// was encoded from bytes of hash h by this store; its checksum
		// catches damage since, and every reader verifies the hash. Nor is
		// the bucket asked first: a new chunk is new there too, mostly.
		val, err := b.s.StoredValue(h, false)
		if err == nil {
			err = b.r.Put(ctx, b.r.ChunkKey(h), val)
		}
		if err == nil {
			b.metrics.uploadedBytes.Add(float64(len(val)))
			err = b.s.MarkUploaded(h)
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
// there.
func (b *Backing) Publish(ctx context.Context, name string) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	st, known, err := b.checkpointState(name)
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
func (b *Backing) publishChanged(ctx context.Context) error {
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

func (b *Backing) publishAll(ctx context.Context) error {
	entries, err := b.s.Namespace().ReadDir(meta.RootIno)
	if err != nil {
		return err
	}
	states, err := b.checkpointStates()
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
func (b *Backing) publishOne(ctx context.Context, name string, st checkpointState, known bool) error {
	if strings.HasPrefix(name, hiddenPrefix) || (known && !st.Owned && st.Digest == "") {
		return nil // being built or imported
	}
	m, js, err := buildManifest(b.s, name)
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
		if err := b.setCheckpointState(name, &st); err != nil {
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
	if err := b.setCheckpointState(name, &checkpointState{Owned: true, Digest: d}); err != nil {
		return err
	}
	b.log.Debug("published", "checkpoint", name, "remote", b.r)
	return nil
}

// publishCheckpoint uploads the chunks of m the bucket lacks, then m.
func (b *Backing) publishCheckpoint(ctx context.Context, m *Manifest, js []byte) error {
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
func (b *Backing) withdraw(ctx context.Context, name string) error {
	if err := b.r.Remove(ctx, b.r.ManifestKey(name)); err != nil {
		return err
	}
	if err := b.r.Remove(ctx, b.r.LeaseKey(name)); err != nil {
		return err
	}
	return b.setCheckpointState(name, nil)
}

// lease is the object that makes a store the one writer of a checkpoint.
type lease struct {
	Store string    `json:"store"`
	Host  string    `json:"host"`
	Since time.Time `json:"since"`
}

// Claim takes the lease of a new top-level name before it is created, so
// that two mounts never write the same checkpoint.
func (b *Backing) Claim(name string) error {
	if strings.HasPrefix(name, hiddenPrefix) {
		return nil
	}
	return b.acquireLease(b.ctx, name)
}

// acquireLease creates the lease object of name if there is none (a
// conditional put: of two mounts racing, one wins), and records the
// checkpoint as this store's. A lease held by another store is EEXIST.
func (b *Backing) acquireLease(ctx context.Context, name string) error {
	if cur, _, err := b.checkpointState(name); err != nil || cur.Owned {
		return err
	}
	if err := claimLease(ctx, b.r, b.storeID, name, b.log); err != nil {
		return err
	}
	return b.setCheckpointState(name, &checkpointState{Owned: true})
}

// claimLease makes store id the writer of checkpoint name in r, unless
// another store is: then EEXIST, naming the holder.
func claimLease(ctx context.Context, r *Remote, id, name string, log *slog.Logger) error {
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
		log.Warn("checkpoint is written by another mount", "checkpoint", name, "holder", held.Host, "store", held.Store, "since", held.Since)
		return fmt.Errorf("checkpoint %s is written by another mount (%s): %w", name, held.Host, syscall.EEXIST)
	}
	return nil
}

// manifestDigest tells manifests apart.
func manifestDigest(js []byte) string {
	d := blake3.Sum256(js)
	return fmt.Sprintf("%x", d[:16])
}
