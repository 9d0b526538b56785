// Package cache groups the store and the mechanisms it stands on, one
// package each, none importing this folder or its parent: store (the
// Store: chunks, the read and write paths, settling, reclaim, space),
// views, fsck, remote (a bucket behind the store), chunk, pack, meta,
// ingest, hot and durable. It holds no code.
package cache
