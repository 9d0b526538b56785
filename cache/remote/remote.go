// Package remote is what ckptfs keeps in a bucket, apart from the store:
// the layout of its objects (chunks/, checkpoints/, leases/ under a
// prefix) and the checkpoint manifest's wire form and validation.
package remote

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/remote/object"
)

// Remote is a checkpoint store in a bucket. It holds
//
//	PREFIX/chunks/HASH        a chunk as stored: codec, length, checksum, payload
//	PREFIX/checkpoints/NAME   a checkpoint's manifest (see checkpointManifest)
//	PREFIX/leases/NAME        which store writes checkpoint NAME
//
// Chunk objects are immutable and named by the hash of their content, so
// writing one twice is harmless; a manifest is published only after every
// chunk it names is in the bucket, so a reader never sees half a checkpoint.
type Remote struct {
	objects object.Store
	prefix  string // "" or ending in "/"
	url     string // s3://BUCKET/PREFIX, for messages
}

// Config says where a bucket is and whose credentials reach it.
// Region and retries come from AWS_REGION and AWS_MAX_ATTEMPTS.
type Config struct {
	URL      string // s3://BUCKET[/PREFIX]
	Endpoint string // host:port or http(s)://host:port; else AWS_ENDPOINT_URL, else AWS S3
	// CredentialsFile and Profile name a shared credentials file
	// (~/.aws/credentials format) to read before the default one: an
	// fstab mount runs with an empty environment.
	CredentialsFile, Profile string
}

// Open connects to the bucket of cfg.URL and checks that it exists.
func Open(ctx context.Context, cfg Config) (*Remote, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("remote %q: want s3://BUCKET/PREFIX", cfg.URL)
	}
	s3, err := object.OpenS3(ctx, object.S3Config{Bucket: u.Host, Endpoint: cfg.Endpoint,
		CredentialsFile: cfg.CredentialsFile, Profile: cfg.Profile})
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", cfg.URL, err)
	}
	return New(s3, strings.Trim(u.Path, "/"), cfg.URL), nil
}

// New lays checkpoints out under prefix in objects; url names it.
func New(objects object.Store, prefix, url string) *Remote {
	if prefix != "" {
		prefix += "/"
	}
	return &Remote{objects: objects, prefix: prefix, url: url}
}

// ChunkKey, ManifestKey and LeaseKey name a chunk's, a checkpoint's
// manifest's and its lease's objects.
func (r *Remote) ChunkKey(h chunk.Hash) string   { return r.prefix + "chunks/" + h.String() }
func (r *Remote) ManifestKey(name string) string { return r.prefix + "checkpoints/" + name }
func (r *Remote) LeaseKey(name string) string    { return r.prefix + "leases/" + name }

// String is the bucket's s3:// URL.
func (r *Remote) String() string { return r.url }

// HasChunk reports whether the bucket holds chunk h.
func (r *Remote) HasChunk(ctx context.Context, h chunk.Hash) (bool, error) {
	_, err := r.objects.Stat(ctx, r.ChunkKey(h))
	if IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat chunk %s in %s: %w", h.Short(), r.url, err)
	}
	return true, nil
}

// Put writes an object.
func (r *Remote) Put(ctx context.Context, key string, data []byte) error {
	if err := r.objects.Put(ctx, key, data); err != nil {
		return fmt.Errorf("%s: %w", r.url, err)
	}
	return nil
}

// Get reads a whole object; ErrNotExist when there is none. An object over
// limit is corrupt: nothing ckptfs writes is that large.
func (r *Remote) Get(ctx context.Context, key string, limit int64) ([]byte, error) {
	data, err := r.objects.Get(ctx, key, limit)
	if errors.Is(err, object.ErrTooLarge) {
		return nil, fmt.Errorf("%s: %w: %w", r.url, err, chunk.ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.url, err)
	}
	return data, nil
}

// IsNotExist reports whether err says an object is missing.
func IsNotExist(err error) bool { return errors.Is(err, object.ErrNotExist) }

// ListCheckpoints lists the top-level checkpoint manifests in the bucket,
// name to ETag. Names with a slash (pushed as run/ck) are not listed.
func (r *Remote) ListCheckpoints(ctx context.Context) (map[string]string, error) {
	dir := r.prefix + "checkpoints/"
	objects, err := r.objects.List(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints in %s: %w", r.url, err)
	}
	out := map[string]string{}
	for _, o := range objects {
		if name := strings.TrimPrefix(o.Key, dir); name != "" && !strings.Contains(name, "/") {
			out[name] = o.ETag
		}
	}
	return out, nil
}

// PutIfAbsent writes key only if no object has that name and reports
// whether it did.
func (r *Remote) PutIfAbsent(ctx context.Context, key string, data []byte) (bool, error) {
	won, err := r.objects.PutIfAbsent(ctx, key, data)
	if err != nil {
		return false, fmt.Errorf("%s: %w", r.url, err)
	}
	return won, nil
}

// Remove deletes an object.
func (r *Remote) Remove(ctx context.Context, key string) error {
	if err := r.objects.Remove(ctx, key); err != nil {
		return fmt.Errorf("%s: %w", r.url, err)
	}
	return nil
}
