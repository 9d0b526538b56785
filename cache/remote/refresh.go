package remote

import (
	"context"
	"errors"
	"fmt"
	"path"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Refresh: every MetadataTTL the bucket's checkpoint list is read, and the
// checkpoints other mounts published, replaced or withdrew are imported,
// replaced or removed here. An import copies the manifest only; chunks are
// fetched when first read.

func (b *Backing) refresh(ctx context.Context) error {
	listed, err := b.r.ListCheckpoints(ctx)
	if err != nil {
		return err
	}
	states, err := b.checkpointStates()
	if err != nil {
		return err
	}
	var errs []error
	for name, etag := range listed {
		if err := PlainPath(name); err != nil || path.Base(name) != name {
			b.log.Warn("checkpoint in the bucket not shown: not a plain name", "checkpoint", name, "remote", b.r)
			continue
		}
		st, known := states[name]
		if st.Owned || (known && st.ETag == etag && st.Digest != "") {
			continue
		}
		if !known {
			if _, err := b.s.Namespace().Lookup(meta.RootIno, name); err == nil {
				b.log.Warn("checkpoint in the bucket not shown: a local one has its name", "checkpoint", name, "remote", b.r)
				continue
			}
		}
		if b.refused[name] == etag {
			continue
		}
		err := b.importCheckpoint(ctx, name, etag)
		if errors.Is(err, chunk.ErrCorrupt) { // this version will not do: say so once
			b.log.Warn("checkpoint in the bucket not imported", "checkpoint", name, "remote", b.r, "reason", err)
			b.refused[name] = etag
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("import %s: %w", name, err))
		}
	}
	for name, st := range states {
		if _, ok := listed[name]; !ok && !st.Owned {
			b.log.Info("checkpoint withdrawn from the bucket", "checkpoint", name)
			if err := b.s.Namespace().RemoveAll(meta.RootIno, name); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, err)
			}
			errs = append(errs, b.setCheckpointState(name, nil))
		}
	}
	return errors.Join(errs...)
}

// importCheckpoint makes checkpoint name of the bucket (manifest object
// etag) the local one, replacing an earlier import.
func (b *Backing) importCheckpoint(ctx context.Context, name, etag string) error {
	js, err := b.r.Get(ctx, b.r.ManifestKey(name), MaxManifestSize)
	if err != nil {
		return err
	}
	m, err := Parse(b.r, name, js)
	if err != nil {
		return err
	}
	// Recorded first: a crash part way leaves a state with no digest,
	// which the publisher leaves alone and the next refresh redoes.
	if err := b.setCheckpointState(name, &checkpointState{ETag: etag}); err != nil {
		return err
	}
	var hashes []chunk.Hash
	for _, e := range m.Entries {
		for _, c := range e.Content.Chunks {
			hashes = append(hashes, c.Hash)
		}
	}
	if err := b.s.MarkBucketOnly(hashes); err != nil {
		return err
	}
	if err := createTree(b.s, meta.RootIno, name, m.Entries, true); err != nil {
		return err
	}
	_, local, err := buildManifest(b.s, name)
	if err != nil {
		return err
	}
	b.log.Info("checkpoint imported from the bucket", "checkpoint", name, "entries", len(m.Entries))
	return b.setCheckpointState(name, &checkpointState{ETag: etag, Digest: manifestDigest(local)})
}
