// Package object is the object store a bucket is, as ckptfs uses it: a
// handful of calls, an S3 implementation (the only code that talks to
// minio-go) and an in-memory one that tests can make fail on demand.
package object

import (
	"context"
	"errors"
	"os"
)

// Store holds objects by key. Keys are slash-separated; nothing here gives
// the slashes meaning beyond List's prefix.
type Store interface {
	// Get reads a whole object of at most limit bytes: ErrNotExist when
	// there is none, ErrTooLarge when it is larger.
	Get(ctx context.Context, key string, limit int64) ([]byte, error)
	Put(ctx context.Context, key string, data []byte) error
	// PutIfAbsent writes key only if no object has that name, and reports
	// whether it did: of two racing writers, one wins.
	PutIfAbsent(ctx context.Context, key string, data []byte) (bool, error)
	// Stat describes an object; ErrNotExist when there is none.
	Stat(ctx context.Context, key string) (Info, error)
	// List describes every object whose key starts with prefix.
	List(ctx context.Context, prefix string) ([]Info, error)
	Remove(ctx context.Context, key string) error
}

// Info describes an object. ETag changes whenever its content does.
type Info struct {
	Key  string
	Size int64
	ETag string
}

// ErrNotExist is an object that is not there (it matches os.ErrNotExist).
var ErrNotExist = os.ErrNotExist

// ErrTooLarge is an object over the limit its reader set.
var ErrTooLarge = errors.New("object larger than its limit")
