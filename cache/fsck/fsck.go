// Package fsck verifies a store and trusts nothing: it reads every record
// and every stored chunk through the store's API, as a reader would, and
// checks each against what references it.
package fsck

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/pack"
)

// Report is the outcome of a full verification.
type Report struct {
	Files  int64
	Chunks int64
	Bytes  int64 // raw bytes of all chunks verified
	// InBucket counts chunks evicted from a cache store: the bucket holds
	// them, and they are verified when fetched.
	InBucket int64
	Problems []string
}

// Checked is what fsck reads of a store: a frozen snapshot of its
// namespace, its staged files, its chunks as stored, and the damage found
// when it opened.
type Checked interface {
	Frozen(fn func(*meta.Namespace) error) error
	Damage() error
	CheckStaged(c *meta.Content) error
	ScanChunks(fn func(h chunk.Hash, loc pack.Loc, err error) error) error
	ReadLocal(h chunk.Hash) ([]byte, error)
	Uploaded(h chunk.Hash) bool
	DeltaProblems() ([]string, error)
}

// Store walks the namespace of s, decodes every inode, reads and verifies
// every stored chunk against its hash (a delta through its chain),
// checks the dependencies of deltas, and checks that every chunk a file
// references exists with the length the file expects. A store in use is
// checked as it was when the check began: the namespace from one snapshot,
// its chunks kept meanwhile (see store.Store.Frozen).
func Store(s Checked) (rep *Report, err error) {
	err = s.Frozen(func(ns *meta.Namespace) error {
		rep, err = check(s, ns)
		return err
	})
	return rep, err
}

// check verifies the snapshot ns of s's namespace and the chunks of s.
func check(s Checked, ns *meta.Namespace) (*Report, error) {
	rep := &Report{}
	var mu sync.Mutex
	problem := func(format string, a ...any) {
		mu.Lock()
		rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	if err := s.Damage(); err != nil {
		problem("%v", err)
	}
	inodes := map[uint64]bool{meta.RootIno: true}
	refs := map[chunk.Hash]chunk.Ref{}
	users := map[chunk.Hash]string{}
	// Every record that does not read is a problem, and the walk goes on
	// past it: everything below it is still reached, not "unreferenced".
	badRecord := func(rel string, ino uint64, err error) error {
		inodes[ino] = true
		problem("namespace: %v", err)
		return nil
	}
	err := ns.WalkAll(meta.RootIno, "", func(rel string, in *meta.Inode) error {
		inodes[in.Ino] = true
		if len(in.Content.Chunks) > 0 || in.Mode&syscall.S_IFMT == syscall.S_IFREG {
			rep.Files++
		}
		if in.Content.Staged != 0 {
			if err := s.CheckStaged(&in.Content); err != nil {
				problem("%s: %v", rel, err)
			}
		}
		for _, c := range in.Content.Chunks {
			if prev, ok := refs[c.Hash]; ok && prev.Len != c.Len {
				problem("%s: chunk %s listed with length %d, elsewhere %d", rel, c.Hash, c.Len, prev.Len)
			}
			refs[c.Hash] = c
			if _, ok := users[c.Hash]; !ok {
				users[c.Hash] = rel
			}
		}
		return nil
	}, badRecord)
	if err != nil {
		return nil, fmt.Errorf("fsck: walk namespace: %w", err)
	}

	stored := map[chunk.Hash]bool{}
	var keys []record
	if err := s.ScanChunks(func(h chunk.Hash, loc pack.Loc, _ error) error {
		stored[h] = true
		keys = append(keys, record{h, loc})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("fsck: list chunks: %w", err)
	}
	// Read the packs front to back; ReadLocal reports a bad location.
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i].loc, keys[j].loc
		return a.Pack < b.Pack || a.Pack == b.Pack && a.Offset < b.Offset
	})
	work := make(chan chunk.Hash)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range work {
				raw, err := s.ReadLocal(h)
				if errors.Is(err, meta.ErrNoChunk) && s.Uploaded(h) {
					continue // evicted since it was listed: the bucket has it
				}
				mu.Lock()
				rep.Chunks++
				rep.Bytes += int64(len(raw))
				mu.Unlock()
				where := "unreferenced"
				if u, ok := users[h]; ok {
					where = "used by " + u
				}
				if err != nil {
					problem("chunk %s (%s): %v", h, where, err)
				} else if ref, ok := refs[h]; ok && int(ref.Len) != len(raw) {
					problem("chunk %s (%s): %d bytes, file expects %d", h, where, len(raw), ref.Len)
				}
			}
		}()
	}
	for _, r := range keys {
		work <- r.hash
	}
	close(work)
	wg.Wait()

	deltas, err := s.DeltaProblems()
	if err != nil {
		return nil, fmt.Errorf("fsck: deltas: %w", err)
	}
	for _, p := range deltas {
		problem("%s", p)
	}
	for h, rel := range users {
		switch {
		case stored[h]:
		case s.Uploaded(h):
			rep.InBucket++
		default:
			problem("%s: chunk %s missing", rel, h)
		}
	}
	if err := ns.InodeKeys(func(key []byte) error {
		if ino, ok := meta.InodeOfKey(key); !ok {
			problem("inode key %x is malformed", key)
		} else if !inodes[ino] {
			problem("inode %d is not reachable from the root (gc removes it)", ino)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("fsck: list inodes: %w", err)
	}
	return rep, nil
}

// record is a stored chunk where the index places it.
type record struct {
	hash chunk.Hash
	loc  pack.Loc
}
