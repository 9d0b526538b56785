package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/ckptfs/ckptfs/cache/chunk"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Remote is a checkpoint store in an S3-compatible bucket. It holds
//
//	PREFIX/chunks/HASH        a chunk as stored: codec, length, checksum, payload
//	PREFIX/checkpoints/NAME   a checkpoint's manifest (see checkpointManifest)
//
// Chunk objects are immutable and named by the hash of their content, so
// writing one twice is harmless; a manifest is published only after every
// chunk it names is in the bucket, so a reader never sees half a checkpoint.
type Remote struct {
	client *minio.Client
	bucket string
	prefix string // "" or ending in "/"
	url    string // s3://BUCKET/PREFIX, for messages
}

// RemoteConfig says where a bucket is and whose credentials reach it.
// Region and retries come from AWS_REGION and AWS_MAX_ATTEMPTS.
type RemoteConfig struct {
	URL      string // s3://BUCKET[/PREFIX]
	Endpoint string // host:port or http(s)://host:port; else AWS_ENDPOINT_URL, else AWS S3
	// CredentialsFile and Profile name a shared credentials file
	// (~/.aws/credentials format) to read before the default one: an
	// fstab mount runs with an empty environment.
	CredentialsFile, Profile string
}

// credentialChain finds credentials as the AWS SDKs do: the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the shared
// credentials file (cfg's, then AWS_SHARED_CREDENTIALS_FILE or
// ~/.aws/credentials, with AWS_PROFILE), then an IAM role: web identity
// (IRSA), the ECS task role or the EC2 instance's, unless
// AWS_EC2_METADATA_DISABLED=true.
func credentialChain(cfg RemoteConfig) *credentials.Credentials {
	chain := []credentials.Provider{&credentials.EnvAWS{}}
	if cfg.CredentialsFile != "" {
		chain = append(chain, &credentials.FileAWSCredentials{Filename: cfg.CredentialsFile, Profile: cfg.Profile})
	}
	chain = append(chain, &credentials.FileAWSCredentials{Profile: cfg.Profile})
	if !strings.EqualFold(os.Getenv("AWS_EC2_METADATA_DISABLED"), "true") {
		chain = append(chain, &credentials.IAM{})
	}
	return credentials.NewChainCredentials(chain)
}

// OpenRemote connects to the bucket of cfg.URL and checks that it exists.
func OpenRemote(ctx context.Context, cfg RemoteConfig) (*Remote, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("remote %q: want s3://BUCKET/PREFIX", cfg.URL)
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL")
	}
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	secure := !strings.HasPrefix(endpoint, "http://")
	endpoint = strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	attempts, _ := strconv.Atoi(os.Getenv("AWS_MAX_ATTEMPTS")) // 0: the client's default, 10
	client, err := minio.New(endpoint, &minio.Options{
		Creds:      credentialChain(cfg),
		Secure:     secure,
		Region:     region,
		MaxRetries: attempts,
	})
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", cfg.URL, err)
	}
	r := &Remote{client: client, bucket: u.Host, prefix: strings.Trim(u.Path, "/"), url: cfg.URL}
	if r.prefix != "" {
		r.prefix += "/"
	}
	ok, err := client.BucketExists(ctx, r.bucket)
	if err != nil {
		return nil, fmt.Errorf("remote %s at %s: %w", cfg.URL, endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("remote %s at %s: bucket %q does not exist", cfg.URL, endpoint, r.bucket)
	}
	return r, nil
}

func (r *Remote) chunkKey(h chunk.Hash) string   { return r.prefix + "chunks/" + h.String() }
func (r *Remote) manifestKey(name string) string { return r.prefix + "checkpoints/" + name }

// hasChunk reports whether the bucket holds chunk h.
func (r *Remote) hasChunk(ctx context.Context, h chunk.Hash) (bool, error) {
	_, err := r.client.StatObject(ctx, r.bucket, r.chunkKey(h), minio.StatObjectOptions{})
	if err == nil {
		return true, nil
	}
	if minio.ToErrorResponse(err).StatusCode == 404 {
		return false, nil
	}
	return false, fmt.Errorf("stat chunk %s in %s: %w", h.Short(), r.url, err)
}

func (r *Remote) put(ctx context.Context, key string, data []byte) error {
	_, err := r.client.PutObject(ctx, r.bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	if err != nil {
		return fmt.Errorf("put %s in %s: %w", key, r.url, err)
	}
	return nil
}

// get reads a whole object; ErrNotExist when there is none.
func (r *Remote) get(ctx context.Context, key string, limit int64) ([]byte, error) {
	obj, err := r.client.GetObject(ctx, r.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s from %s: %w", key, r.url, err)
	}
	defer obj.Close()
	info, err := obj.Stat() // the GET's response headers: no second request
	if minio.ToErrorResponse(err).StatusCode == 404 {
		return nil, fmt.Errorf("%s in %s: %w", key, r.url, os.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s from %s: %w", key, r.url, err)
	}
	if info.Size > limit || info.Size < 0 {
		return nil, fmt.Errorf("%s in %s: %d bytes, more than %d: %w", key, r.url, info.Size, limit, chunk.ErrCorrupt)
	}
	data := make([]byte, info.Size) // one allocation, not a growing buffer
	if _, err := io.ReadFull(obj, data); err != nil {
		return nil, fmt.Errorf("get %s from %s: %w", key, r.url, err)
	}
	return data, nil
}

// isNotExist reports whether err says an object is missing.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

func (r *Remote) leaseKey(name string) string { return r.prefix + "leases/" + name }

// String is the bucket's s3:// URL.
func (r *Remote) String() string { return r.url }

// listCheckpoints lists the top-level checkpoint manifests in the bucket,
// name to ETag. Names with a slash (pushed as run/ck) are not listed.
func (r *Remote) listCheckpoints(ctx context.Context) (map[string]string, error) {
	dir := r.prefix + "checkpoints/"
	out := map[string]string{}
	for o := range r.client.ListObjects(ctx, r.bucket, minio.ListObjectsOptions{Prefix: dir}) {
		if o.Err != nil {
			return nil, fmt.Errorf("list checkpoints in %s: %w", r.url, o.Err)
		}
		if name := strings.TrimPrefix(o.Key, dir); name != "" && !strings.Contains(name, "/") {
			out[name] = o.ETag
		}
	}
	return out, nil
}

// putIfAbsent writes key only if no object has that name (If-None-Match: *)
// and reports whether it did.
func (r *Remote) putIfAbsent(ctx context.Context, key string, data []byte) (bool, error) {
	opts := minio.PutObjectOptions{ContentType: "application/json", DisableMultipart: true}
	opts.SetMatchETagExcept("*")
	_, err := r.client.PutObject(ctx, r.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	if minio.ToErrorResponse(err).Code == minio.PreconditionFailed {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("put %s in %s: %w", key, r.url, err)
	}
	return true, nil
}

func (r *Remote) remove(ctx context.Context, key string) error {
	if err := r.client.RemoveObject(ctx, r.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("remove %s from %s: %w", key, r.url, err)
	}
	return nil
}
