// Package cache groups the store and the mechanisms it stands on, one
// package each, none importing this folder or its parent: store (the
// Store: chunks, the read path, reclaim, space, deltas), writes (the write
// path: drafts, staged files and the settler), versions (which versions of
// a file become deltas), usage (reference counts and checkpoint totals),
// chunkcache (decoded chunks for readers), views, fsck, remote (a bucket
// behind the store), chunk, pack, meta, compaction (Badger's tables), ingest, hot, durable, and
// storetest (the fixture of tests that need a store). It holds no code.
package cache
