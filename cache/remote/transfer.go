package remote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sync/atomic"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"golang.org/x/sync/errgroup"
)

// transferParallel is how many chunks move at once.
const transferParallel = 8

// Transfer counts what a push or pull moved.
type Transfer struct {
	Files        int
	Chunks       int   // distinct chunks of the checkpoint
	Moved        int   // chunks sent or fetched; the rest were there already
	MovedBytes   int64 // their stored (compressed) bytes
	LogicalBytes int64 // the checkpoint's size
}

// Push publishes checkpoint name of the store in r: every chunk the bucket
// lacks, each verified against its hash before it leaves, then the
// manifest. It takes the checkpoint's lease first, as a mount does: a
// checkpoint another store writes is refused (EEXIST). progress gets the
// raw bytes of each chunk handled.
func Push(ctx context.Context, s Local, r *Remote, name string, progress func(int64)) (*Transfer, error) {
	m, js, err := buildManifest(s, name)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", name, err)
	}
	id, err := storeID(s)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", name, err)
	}
	if err := claimLease(ctx, r, id, name, s.Logger()); err != nil {
		return nil, fmt.Errorf("push %s: %w", name, err)
	}
	t, err := eachChunk(ctx, m, progress, func(ctx context.Context, ref chunk.Ref) (int64, error) {
		n, err := sendChunk(ctx, s, r, ref.Hash)
		if err != nil {
			return 0, fmt.Errorf("push %s: %w", name, err)
		}
		return n, nil
	})
	if err != nil {
		return nil, err
	}
	if err := r.Put(ctx, r.ManifestKey(name), js); err != nil {
		return nil, err
	}
	return t, nil
}

// buildManifest describes checkpoint name as a bucket holds it, and
// returns it with its JSON encoding.
func buildManifest(s Local, name string) (*Manifest, []byte, error) {
	root, err := s.Namespace().Resolve(name)
	if err != nil {
		return nil, nil, err
	}
	m := &Manifest{Format: Format, Name: name}
	m.Entries = append(m.Entries, EntryOf("", root))
	if root.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		err := s.Namespace().Walk(root.Ino, func(rel string, in *meta.Inode) error {
			switch in.Mode & syscall.S_IFMT {
			case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK:
				m.Entries = append(m.Entries, EntryOf(rel, in))
			default: // FIFOs, sockets and device nodes stay on this node
				s.Logger().Debug("not published: not a file, folder or symlink", "checkpoint", name, "path", rel)
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	js, err := json.Marshal(m)
	return m, js, err
}

// sendChunk puts chunk h in the bucket unless it is there already, after
// checking it decodes to bytes of hash h. It returns the bytes sent.
func sendChunk(ctx context.Context, s Local, r *Remote, h chunk.Hash) (int64, error) {
	if ok, err := r.HasChunk(ctx, h); err != nil || ok {
		return 0, err
	}
	val, err := s.StoredValue(h, true)
	if err != nil {
		return 0, err
	}
	return int64(len(val)), r.Put(ctx, r.ChunkKey(h), val)
}

// eachChunk runs move on every distinct chunk of m, transferParallel at a
// time, until one fails. move returns the stored bytes it moved, 0 when the
// chunk was there already.
func eachChunk(ctx context.Context, m *Manifest, progress func(int64), move func(context.Context, chunk.Ref) (int64, error)) (*Transfer, error) {
	t := &Transfer{}
	var moved, movedBytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(transferParallel)
	for _, ref := range manifestChunks(m, t) {
		g.Go(func() error {
			defer progress(int64(ref.Len))
			n, err := move(gctx, ref)
			if err == nil && n > 0 {
				moved.Add(1)
				movedBytes.Add(n)
			}
			return err
		})
	}
	err := g.Wait()
	t.Moved, t.MovedBytes = int(moved.Load()), movedBytes.Load()
	return t, err
}

// manifestChunks lists the distinct chunks of m's files and counts them in t.
func manifestChunks(m *Manifest, t *Transfer) []chunk.Ref {
	seen := map[chunk.Hash]bool{}
	var refs []chunk.Ref
	for _, e := range m.Entries {
		if e.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		t.Files++
		t.LogicalBytes += e.Content.Size
		for _, c := range e.Content.Chunks {
			if !seen[c.Hash] {
				seen[c.Hash] = true
				refs = append(refs, chunk.Ref(c))
			}
		}
	}
	t.Chunks = len(refs)
	return refs
}

// Pull copies checkpoint name from r into the store as name: every chunk
// the store lacks, verified against its hash, then the checkpoint's files,
// built under a hidden name and renamed into place, so a failed pull leaves
// nothing visible. progress gets the raw bytes of each chunk handled.
func Pull(ctx context.Context, s Local, r *Remote, name string, progress func(int64)) (*Transfer, error) {
	js, err := r.Get(ctx, r.ManifestKey(name), MaxManifestSize)
	if IsNotExist(err) {
		return nil, fmt.Errorf("pull %s: no checkpoint %q in %s", name, name, r)
	}
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", name, err)
	}
	m, err := Parse(r, name, js)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", name, err)
	}
	parent, err := s.Namespace().MkdirAll(path.Dir(name))
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", name, err)
	}
	if _, err := s.Namespace().Lookup(parent, path.Base(name)); err == nil {
		return nil, fmt.Errorf("pull %s: %s is already in the store: %w", name, name, syscall.EEXIST)
	}
	t, err := eachChunk(ctx, m, progress, func(ctx context.Context, ref chunk.Ref) (int64, error) {
		if s.HasChunk(ref.Hash) {
			return 0, nil
		}
		_, n, err := fetchChunk(ctx, s, r, ref)
		if err != nil {
			return 0, fmt.Errorf("pull %s: %w", name, err)
		}
		return n, nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.SyncChunks(); err != nil { // before the records that name them
		return nil, fmt.Errorf("pull %s: %w", name, err)
	}
	if err := createTree(s, parent, path.Base(name), m.Entries, false); err != nil {
		return nil, fmt.Errorf("pull %s: %w", name, err)
	}
	return t, s.Sync()
}

// hiddenPrefix starts the names of trees being built; they are never
// published or leased.
const hiddenPrefix = ".pull-"

// createTree creates entries as name in parent: under a hidden name first,
// moved into place once complete. With replace, a tree already there is
// swapped out in the same transaction and then removed, so readers see the
// old tree or the new one, never neither.
func createTree(s Local, parent uint64, name string, entries []Entry, replace bool) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	hidden := hiddenPrefix + hex.EncodeToString(rnd[:])
	inos := map[string]uint64{}
	for i, e := range entries {
		dir, base := parent, hidden
		if i > 0 { // validate saw that the folder comes earlier
			dir, base = inos[path.Dir(e.Path)], path.Base(e.Path)
		}
		in, err := s.Namespace().Create(dir, base, e.Inode())
		if err != nil {
			s.Namespace().RemoveAll(parent, hidden)
			return fmt.Errorf("create %q: %w", e.Path, err)
		}
		key := e.Path
		if i == 0 {
			key = "."
		}
		inos[key] = in.Ino
	}
	if !replace {
		if err := s.Namespace().MoveInto(parent, hidden, name); err != nil {
			s.Namespace().RemoveAll(parent, hidden)
			return fmt.Errorf("rename into place: %w", err)
		}
		return nil
	}
	if err := s.Namespace().Swap(parent, hidden, name); err != nil {
		s.Namespace().RemoveAll(parent, hidden)
		return fmt.Errorf("swap into place: %w", err)
	}
	if err := s.Namespace().RemoveAll(parent, hidden); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("remove the replaced tree: %w", err)
	}
	return nil
}
