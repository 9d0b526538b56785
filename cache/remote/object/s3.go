package object

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a bucket of an S3-compatible server (AWS S3, MinIO, Ceph RGW,
// SeaweedFS).
type S3 struct {
	client *minio.Client
	bucket string
}

var _ Store = (*S3)(nil)

// S3Config says where a bucket is and whose credentials reach it. Region
// and retries come from AWS_REGION and AWS_MAX_ATTEMPTS.
type S3Config struct {
	Bucket   string
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
func credentialChain(cfg S3Config) *credentials.Credentials {
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

// OpenS3 connects to the bucket of cfg and checks that it exists.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
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
		return nil, err
	}
	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("at %s: %w", endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("at %s: bucket %q does not exist", endpoint, cfg.Bucket)
	}
	return &S3{client: client, bucket: cfg.Bucket}, nil
}

func isNotFound(err error) bool { return minio.ToErrorResponse(err).StatusCode == 404 }

func (s *S3) Get(ctx context.Context, key string, limit int64) ([]byte, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer obj.Close()
	info, err := obj.Stat() // the GET's response headers: no second request
	if isNotFound(err) {
		return nil, fmt.Errorf("%s: %w", key, ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if info.Size > limit || info.Size < 0 {
		return nil, fmt.Errorf("%s: %d bytes, more than %d: %w", key, info.Size, limit, ErrTooLarge)
	}
	data := make([]byte, info.Size) // one allocation, not a growing buffer
	if _, err := io.ReadFull(obj, data); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return data, nil
}

func (s *S3) Put(ctx context.Context, key string, data []byte) error {
	_, err := s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// PutIfAbsent is a conditional put (If-None-Match: *).
func (s *S3) PutIfAbsent(ctx context.Context, key string, data []byte) (bool, error) {
	opts := minio.PutObjectOptions{ContentType: "application/json", DisableMultipart: true}
	opts.SetMatchETagExcept("*")
	_, err := s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	if minio.ToErrorResponse(err).Code == minio.PreconditionFailed {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("put %s: %w", key, err)
	}
	return true, nil
}

func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	o, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if isNotFound(err) {
		return Info{}, fmt.Errorf("%s: %w", key, ErrNotExist)
	}
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return Info{Key: key, Size: o.Size, ETag: o.ETag}, nil
}

func (s *S3) List(ctx context.Context, prefix string) ([]Info, error) {
	var out []Info
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, o.Err)
		}
		out = append(out, Info{Key: o.Key, Size: o.Size, ETag: o.ETag})
	}
	return out, nil
}

func (s *S3) Remove(ctx context.Context, key string) error {
	if err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	return nil
}
