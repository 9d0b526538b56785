// Package meta is the store's Badger database: every key prefix, the inode
// records, and the namespace's transactions (create, remove, rename,
// walk), plus the checks of Badger's tables on open.
package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/dgraph-io/badger/v4"
)

// Key prefixes of the database: all of them.
const (
	PrefixChunk      = 'c'     // c + hash -> chunk location (pack.Loc)
	PrefixInode      = 'i'     // i + ino -> inode record
	prefixDentry     = 'd'     // d + parent ino + name -> child ino, type bits
	keyInoSeq        = "s/ino" // inode number sequence
	KeyRemoteURL     = "r/url" // the bucket this store caches
	KeyStoreID       = "r/id"  // names this store in leases
	PrefixUploaded   = "r/up/" // + hash: the bucket holds the chunk
	PrefixCheckpoint = "r/ck/" // + name: a checkpoint's bucket state
	prefixStaged     = "w/"    // + staged file id -> ino: content to chunk
	// KeySession holds the first pack id of the session that has the store
	// open: present at open, the last one did not close cleanly.
	KeySession = "m/session"
	// PrefixSuspect + pack id (hex): a pack written by a session that did
	// not close cleanly, whose records are checked before dedup trusts them.
	PrefixSuspect = "m/suspect/"
	// KeyPackIDs holds the id of the last pack made: never given again.
	KeyPackIDs = "m/packs"
	// prefixPackRecord + pack id + offset -> hash: a pack's records.
	prefixPackRecord = "p/"
	// prefixDependent + reference hash + hash: a chunk stored as a delta
	// against the reference, which stays while it does; prefixReference +
	// hash -> the reference hash, to find that key again.
	prefixDependent = "D/"
	prefixReference = "R/"
	// keyIndexVersion says what the chunk index keeps (see EnsureListing).
	keyIndexVersion = "m/index"
)

// ChunkKey is the index key of chunk h.
func ChunkKey(h chunk.Hash) []byte { return append([]byte{PrefixChunk}, h[:]...) }

// UploadedKey is the key that says the bucket holds chunk h.
func UploadedKey(h chunk.Hash) []byte { return []byte(PrefixUploaded + string(h[:])) }

// InodeOfKey reads the inode number of an inode record's key.
func InodeOfKey(key []byte) (uint64, bool) {
	if len(key) != 9 || key[0] != PrefixInode {
		return 0, false
	}
	return binary.BigEndian.Uint64(key[1:]), true
}

// RootIno is the inode number of the namespace root.
const RootIno uint64 = 1

// DirEntry is one name in a directory.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // type bits only
}

// InodeKey is the key of inode ino's record.
func InodeKey(ino uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{PrefixInode}, ino)
}

func dentryPrefix(parent uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixDentry}, parent)
}

func dentryKey(parent uint64, name string) []byte {
	return append(dentryPrefix(parent), name...)
}

func encodeDentry(ino uint64, mode uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, ino), mode&syscall.S_IFMT)
}

func decodeDentry(v []byte) (uint64, uint32, error) {
	if len(v) != 12 {
		return 0, 0, fmt.Errorf("directory entry of %d bytes: %w", len(v), chunk.ErrCorrupt)
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint32(v[8:]), nil
}

// Hooks let the rest of the store act on the namespace: all may be nil.
type Hooks struct {
	// Reserve is asked before an entry is created: free space.
	Reserve func() error
	// Claim is asked before name is created in, or renamed into, parent:
	// in front of a bucket, the lease of a new checkpoint.
	Claim func(parent uint64, name string) error
	// Changed is told after every change is committed.
	Changed func()
	// Records is told, after a change committed, of the records it
	// created, rewrote or removed (see RecordChange). What is kept from
	// it, from a SnapshotFrom on, follows the records exactly.
	Records func([]RecordChange)
}

// RecordChange is one record a committed change created (Before nil),
// rewrote, or removed (After nil). Parent is the folder where an entry of
// it was made or removed, NewParent the folder it was linked or renamed
// into (0 if none; a rename within a folder has both): a rewrite with
// neither is a change of the record alone. Name is the entry made: in
// NewParent if set, else in Parent; "" for a removal.
type RecordChange struct {
	Before, After     *Inode
	Parent, NewParent uint64
	Name              string
}

// Namespace is the tree of inodes and directory entries in db.
type Namespace struct {
	db     *badger.DB
	inoSeq *badger.Sequence
	hooks  Hooks
	snap   *badger.Txn // every read of a Snapshot's namespace, nil otherwise
	// commitMu is held shared from a change's commit to its Refs hook, and
	// alone by SnapshotFrom: no change falls between a snapshot and the
	// hooks its taker counts from.
	commitMu *sync.RWMutex
}

// OpenNamespace opens the namespace in db, creating its root if there is
// none.
func OpenNamespace(db *badger.DB, hooks Hooks) (*Namespace, error) {
	if db.Opts().ReadOnly {
		return &Namespace{db: db, hooks: hooks, commitMu: &sync.RWMutex{}}, nil // reads only: no sequence, no root to make
	}
	seq, err := db.GetSequence([]byte(keyInoSeq), 1024)
	if err != nil {
		return nil, fmt.Errorf("inode sequence: %w", err)
	}
	s := &Namespace{db: db, inoSeq: seq, hooks: hooks, commitMu: &sync.RWMutex{}}
	if err := s.ensureRoot(); err != nil {
		seq.Release()
		return nil, err
	}
	return s, nil
}

// Close returns the inode numbers taken but not used.
func (s *Namespace) Close() error {
	if s.inoSeq == nil {
		return nil
	}
	return s.inoSeq.Release()
}

// ErrSnapshot is a change asked of a Snapshot's namespace.
var ErrSnapshot = errors.New("namespace snapshot is read-only")

// Snapshot calls fn with the namespace as it is now: every read through
// the one fn gets sees this moment, whatever commits meanwhile, so a walk
// sees each file once, before or after a rename, and every inode record
// with the entry that reaches it. Changes through it fail with ErrSnapshot.
func (s *Namespace) Snapshot(fn func(*Namespace) error) error {
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	return fn(&Namespace{db: s.db, snap: txn})
}

// SnapshotFrom is Snapshot with start called at the snapshot's moment:
// every change committed before it had its Refs hook called before start
// and is in the snapshot; every change after it calls the hook after
// start and is not.
func (s *Namespace) SnapshotFrom(start func(), fn func(*Namespace) error) error {
	s.commitMu.Lock()
	txn := s.db.NewTransaction(false)
	start()
	s.commitMu.Unlock()
	defer txn.Discard()
	return fn(&Namespace{db: s.db, snap: txn})
}

// view runs fn in a read-only transaction: the snapshot's, if s is one.
func (s *Namespace) view(fn func(txn *badger.Txn) error) error {
	if s.snap != nil {
		return fn(s.snap)
	}
	return s.db.View(fn)
}

// update runs fn in a read-write transaction, retrying on conflicts with
// concurrent transactions.
func (s *Namespace) update(fn func(txn *badger.Txn) error) error {
	return s.updateRecords(func(txn *badger.Txn, _ *changes) error { return fn(txn) })
}

// changes are the records a transaction attempt changed: fn notes them, and
// those of the attempt that commits go to the Records hook.
type changes []RecordChange

func (c *changes) note(ch RecordChange) { *c = append(*c, ch) }

// updateRecords is update for a change of records the Records hook is told
// of.
func (s *Namespace) updateRecords(fn func(txn *badger.Txn, ch *changes) error) error {
	if s.snap != nil {
		return ErrSnapshot
	}
	err := s.commit(fn)
	if err == nil && s.hooks.Changed != nil {
		s.hooks.Changed()
	}
	return err
}

func (s *Namespace) commit(fn func(txn *badger.Txn, ch *changes) error) error {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	for {
		var ch changes
		err := s.db.Update(func(txn *badger.Txn) error {
			ch = ch[:0]
			return fn(txn, &ch)
		})
		if errors.Is(err, badger.ErrConflict) {
			continue
		}
		if err == nil && s.hooks.Records != nil && len(ch) > 0 {
			s.hooks.Records(ch)
		}
		return err
	}
}

func getInode(txn *badger.Txn, ino uint64) (*Inode, error) {
	item, err := txn.Get(InodeKey(ino))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, syscall.ENOENT
	}
	if err != nil {
		return nil, fmt.Errorf("read inode %d: %w", ino, err)
	}
	var in *Inode
	err = item.Value(func(v []byte) error {
		var err error
		in, err = DecodeInode(ino, v)
		return err
	})
	return in, err
}

// putInode writes a record, and for staged content the key that queues it
// to be chunked: the queue is durable with the record that needs it.
func putInode(txn *badger.Txn, in *Inode) error {
	if id := in.Content.Staged; id != 0 {
		if err := txn.Set(stagedKey(id), binary.BigEndian.AppendUint64(nil, in.Ino)); err != nil {
			return err
		}
	}
	return txn.Set(InodeKey(in.Ino), EncodeInode(in))
}

func stagedKey(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte(prefixStaged), id) }

// StagedFiles calls fn with every queued staged file and the inode it was
// staged for, oldest first. The record may have moved on since (replaced,
// removed): Settle says so.
func (s *Namespace) StagedFiles(fn func(id, ino uint64) error) error {
	var queued [][2]uint64
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixStaged), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()[len(prefixStaged):]
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(k) != 8 || len(v) != 8 {
				return fmt.Errorf("staged key %x is malformed: %w", it.Item().Key(), chunk.ErrCorrupt)
			}
			queued = append(queued, [2]uint64{binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(v)})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("staged files: %w", err)
	}
	for _, q := range queued { // outside the transaction: fn writes
		if err := fn(q[0], q[1]); err != nil {
			return err
		}
	}
	return nil
}

// Queued reports whether staged file id is on the queue still.
func (s *Namespace) Queued(id uint64) (bool, error) {
	err := s.view(func(txn *badger.Txn) error {
		_, err := txn.Get(stagedKey(id))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ErrSettleRaced is a Settle the record moved past since the settler read
// it (an append committed, a file it took for nobody's held again): the
// staged file stays queued.
var ErrSettleRaced = errors.New("record changed since the staged file was chunked")

// Settle replaces staged content id of inode ino by its chunked form c and
// takes id off the queue, in one transaction. It reports false, and takes
// id off the queue, when the record no longer holds it (removed, or
// rewritten since): the staged file is nobody's then. A nil c only takes a
// file nobody holds off the queue.
func (s *Namespace) Settle(ino, id uint64, c *Content) (bool, error) {
	settled := false
	err := s.updateRecords(func(txn *badger.Txn, ch *changes) error {
		settled = false
		if err := txn.Delete(stagedKey(id)); err != nil {
			return err
		}
		in, err := getInode(txn, ino)
		if errors.Is(err, syscall.ENOENT) || err == nil && in.Content.Staged != id {
			return nil
		}
		if err != nil {
			return err
		}
		if c == nil {
			return fmt.Errorf("%w: inode %d holds staged file %x", ErrSettleRaced, ino, id)
		}
		if c.Size != in.Content.Size {
			return fmt.Errorf("%w: inode %d: staged %d bytes, chunked %d", ErrSettleRaced, ino, in.Content.Size, c.Size)
		}
		before := *in
		in.Content, settled = *c, true
		ch.note(RecordChange{Before: &before, After: in})
		return putInode(txn, in)
	})
	return settled, err
}

func getDentry(txn *badger.Txn, parent uint64, name string) (uint64, uint32, error) {
	item, err := txn.Get(dentryKey(parent, name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, 0, syscall.ENOENT
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read entry %q: %w", name, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return 0, 0, err
	}
	return decodeDentry(v)
}

func (s *Namespace) ensureRoot() error {
	return s.update(func(txn *badger.Txn) error {
		if _, err := getInode(txn, RootIno); !errors.Is(err, syscall.ENOENT) {
			return err
		}
		now := time.Now().UnixNano()
		return putInode(txn, &Inode{Ino: RootIno, Mode: syscall.S_IFDIR | 0o755, Atime: now, Mtime: now, Ctime: now})
	})
}

// GetInode reads an inode record; syscall.ENOENT if it does not exist.
func (s *Namespace) GetInode(ino uint64) (*Inode, error) {
	var in *Inode
	err := s.view(func(txn *badger.Txn) error {
		var err error
		in, err = getInode(txn, ino)
		return err
	})
	return in, err
}

// Lookup finds name in directory parent.
func (s *Namespace) Lookup(parent uint64, name string) (*Inode, error) {
	var in *Inode
	err := s.view(func(txn *badger.Txn) error {
		ino, _, err := getDentry(txn, parent, name)
		if err != nil {
			return err
		}
		in, err = getInode(txn, ino)
		return err
	})
	return in, err
}

// ReadDir lists directory parent, sorted by name.
func (s *Namespace) ReadDir(parent uint64) ([]DirEntry, error) {
	var out []DirEntry
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = readDir(txn, parent)
		return err
	})
	return out, err
}

// ReadDirInodes lists directory parent with the record of every entry, all
// from one snapshot, so a concurrent unlink cannot split the two.
func (s *Namespace) ReadDirInodes(parent uint64) ([]DirEntry, map[string]*Inode, error) {
	var entries []DirEntry
	inodes := map[string]*Inode{}
	err := s.view(func(txn *badger.Txn) error {
		var err error
		if entries, err = readDir(txn, parent); err != nil {
			return err
		}
		for _, e := range entries {
			if inodes[e.Name], err = getInode(txn, e.Ino); err != nil {
				return fmt.Errorf("%s: %w", e.Name, err)
			}
		}
		return nil
	})
	return entries, inodes, err
}

func readDir(txn *badger.Txn, parent uint64) ([]DirEntry, error) {
	var out []DirEntry
	err := func() error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = dentryPrefix(parent)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			ino, mode, err := decodeDentry(v)
			if err != nil {
				return err
			}
			out = append(out, DirEntry{Name: string(item.Key()[len(opts.Prefix):]), Ino: ino, Mode: mode})
		}
		return nil
	}()
	return out, err
}

// MaxNameLen is the longest name in a directory, as on ext4: a longer one
// could not be exported to a local disk.
const MaxNameLen = 255

// checkName refuses a name no directory entry may have.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	case len(name) > MaxNameLen:
		return syscall.ENAMETOOLONG
	}
	return nil
}

// Create adds a new file, directory or symlink named name in parent, from
// the template in (its Ino is assigned). syscall.EEXIST if the name is taken.
func (s *Namespace) Create(parent uint64, name string, in Inode) (*Inode, error) {
	if s.snap != nil {
		return nil, ErrSnapshot
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	if s.hooks.Reserve != nil {
		if err := s.hooks.Reserve(); err != nil {
			return nil, err
		}
	}
	if err := s.claim(parent, name); err != nil {
		return nil, err
	}
	ino, err := s.inoSeq.Next()
	if err != nil {
		return nil, fmt.Errorf("allocate inode: %w", err)
	}
	in.Ino = ino + RootIno + 1
	err = s.updateRecords(func(txn *badger.Txn, ch *changes) error {
		ch.note(RecordChange{After: &in, Parent: parent, Name: name})
		p, err := freeName(txn, parent, name)
		if err != nil {
			return err
		}
		p.Mtime, p.Ctime = in.Ctime, in.Ctime
		if err := putInode(txn, p); err != nil {
			return err
		}
		if err := putInode(txn, &in); err != nil {
			return err
		}
		return txn.Set(dentryKey(parent, name), encodeDentry(in.Ino, in.Mode))
	})
	if err != nil {
		return nil, err
	}
	return &in, nil
}

// freeName returns the record of folder parent, in which name is free:
// ENOTDIR if parent is no folder, EEXIST if the name is taken.
func freeName(txn *badger.Txn, parent uint64, name string) (*Inode, error) {
	p, err := getInode(txn, parent)
	if err != nil {
		return nil, err
	}
	if p.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, syscall.ENOTDIR
	}
	if _, _, err := getDentry(txn, parent, name); err == nil {
		return nil, syscall.EEXIST
	} else if !errors.Is(err, syscall.ENOENT) {
		return nil, err
	}
	return p, nil
}

// Remove unlinks name from parent: a non-directory when dir is false, an
// empty directory when it is true.
func (s *Namespace) Remove(parent uint64, name string, dir bool) error {
	return s.updateRecords(func(txn *badger.Txn, ch *changes) error {
		ino, mode, err := getDentry(txn, parent, name)
		if err != nil {
			return err
		}
		isDir := mode == syscall.S_IFDIR
		switch {
		case dir && !isDir:
			return syscall.ENOTDIR
		case !dir && isDir:
			return syscall.EISDIR
		case isDir:
			if empty, err := dirEmpty(txn, ino); err != nil {
				return err
			} else if !empty {
				return syscall.ENOTEMPTY
			}
		}
		if err := touchDir(txn, parent); err != nil {
			return err
		}
		if err := txn.Delete(dentryKey(parent, name)); err != nil {
			return err
		}
		return dropLink(txn, ch, parent, ino, isDir)
	})
}

// dropLink deletes inode ino's record when the entry just removed from
// parent was its last, and counts one link less otherwise.
func dropLink(txn *badger.Txn, ch *changes, parent, ino uint64, dir bool) error {
	in, err := getInode(txn, ino)
	if err != nil && !errors.Is(err, chunk.ErrCorrupt) {
		return err
	}
	if !dir && err == nil && in.Links() > 1 {
		before := *in
		in.Nlink--
		in.Ctime = time.Now().UnixNano()
		ch.note(RecordChange{Before: &before, After: in, Parent: parent})
		return putInode(txn, in)
	}
	if err == nil {
		ch.note(RecordChange{Before: in, Parent: parent})
	}
	return txn.Delete(InodeKey(ino))
}

// Link adds name in parent as one more entry of the non-directory ino, as
// link(2) does, and returns its record. syscall.EEXIST if the name is
// taken, EPERM for a directory.
func (s *Namespace) Link(ino, parent uint64, name string) (*Inode, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := s.claim(parent, name); err != nil {
		return nil, err
	}
	var in *Inode
	err := s.updateRecords(func(txn *badger.Txn, ch *changes) error {
		var err error
		if in, err = getInode(txn, ino); err != nil {
			return err
		}
		if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			return syscall.EPERM
		}
		before := *in
		defer func() { ch.note(RecordChange{Before: &before, After: in, NewParent: parent, Name: name}) }()
		if in.Links() >= MaxLinks {
			return syscall.EMLINK
		}
		p, err := freeName(txn, parent, name)
		if err != nil {
			return err
		}
		in.Nlink = in.Links() + 1
		in.Ctime = time.Now().UnixNano()
		p.Mtime, p.Ctime = in.Ctime, in.Ctime
		if err := putInode(txn, in); err != nil {
			return err
		}
		if err := putInode(txn, p); err != nil {
			return err
		}
		return txn.Set(dentryKey(parent, name), encodeDentry(ino, in.Mode))
	})
	if err != nil {
		return nil, err
	}
	return in, nil
}

// MaxLinks bounds the entries of one inode, as ext4's 65,000.
const MaxLinks = 65000

func touchDir(txn *badger.Txn, ino uint64) error {
	p, err := getInode(txn, ino)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	p.Mtime, p.Ctime = now, now
	return putInode(txn, p)
}

// dirEmpty reports whether directory ino has no entries. Badger does not
// track an empty prefix scan for conflicts, so it also reads the
// directory's record, which every create or rename into it rewrites: a
// transaction that removes the directory then conflicts with one that
// fills it.
func dirEmpty(txn *badger.Txn, ino uint64) (bool, error) {
	if _, err := getInode(txn, ino); err != nil && !errors.Is(err, chunk.ErrCorrupt) {
		return false, err
	}
	opts := badger.IteratorOptions{Prefix: dentryPrefix(ino)}
	it := txn.NewIterator(opts)
	defer it.Close()
	it.Rewind()
	return !it.Valid(), nil
}

// Rename flags, as renameat2(2).
const (
	RenameNoReplace = 1
	RenameExchange  = 2
)

// Rename moves oldName in oldParent to newName in newParent atomically,
// replacing a file there (or an empty directory by a directory).
func (s *Namespace) Rename(oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) error {
	if newName == "" || strings.ContainsAny(newName, "/\x00") {
		return syscall.EINVAL
	}
	if flags&RenameExchange != 0 {
		return syscall.ENOTSUP
	}
	if err := s.claim(newParent, newName); err != nil {
		return err
	}
	return s.rename(oldParent, oldName, newParent, newName, flags)
}

func (s *Namespace) claim(parent uint64, name string) error {
	if s.hooks.Claim == nil {
		return nil
	}
	return s.hooks.Claim(parent, name)
}

// MoveInto renames from to to in parent, failing if to exists, without
// claiming to (see Hooks.Claim): a tree built under a hidden name going
// into place.
func (s *Namespace) MoveInto(parent uint64, from, to string) error {
	return s.rename(parent, from, parent, to, RenameNoReplace)
}

// rename is Rename without claiming the new name in the bucket.
func (s *Namespace) rename(oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) error {
	if err := checkName(newName); err != nil {
		return err
	}
	return s.updateRecords(func(txn *badger.Txn, ch *changes) error {
		ino, mode, err := getDentry(txn, oldParent, oldName)
		if err != nil {
			return err
		}
		np, err := getInode(txn, newParent)
		if err != nil {
			return err
		}
		if np.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return syscall.ENOTDIR
		}
		dstIno, dstMode, err := getDentry(txn, newParent, newName)
		switch {
		case errors.Is(err, syscall.ENOENT):
		case err != nil:
			return err
		case dstIno == ino:
			return nil
		case flags&RenameNoReplace != 0:
			return syscall.EEXIST
		default:
			srcDir, dstDir := mode == syscall.S_IFDIR, dstMode == syscall.S_IFDIR
			if srcDir && !dstDir {
				return syscall.ENOTDIR
			}
			if !srcDir && dstDir {
				return syscall.EISDIR
			}
			if dstDir {
				if empty, err := dirEmpty(txn, dstIno); err != nil {
					return err
				} else if !empty {
					return syscall.ENOTEMPTY
				}
			}
			if err := dropLink(txn, ch, newParent, dstIno, dstDir); err != nil {
				return err
			}
		}
		moved, err := getInode(txn, ino)
		if err != nil && !errors.Is(err, chunk.ErrCorrupt) {
			return err
		}
		if err == nil {
			ch.note(RecordChange{Before: moved, After: moved, Parent: oldParent, NewParent: newParent, Name: newName})
		}
		if err := txn.Delete(dentryKey(oldParent, oldName)); err != nil {
			return err
		}
		if err := txn.Set(dentryKey(newParent, newName), encodeDentry(ino, mode)); err != nil {
			return err
		}
		if err := touchDir(txn, oldParent); err != nil {
			return err
		}
		if newParent != oldParent {
			return touchDir(txn, newParent)
		}
		return nil
	})
}

// Swap puts what a names in parent in place of b, in one transaction, and
// leaves what b named (if anything) under a's name.
func (s *Namespace) Swap(parent uint64, a, b string) error {
	return s.update(func(txn *badger.Txn) error {
		aIno, aMode, err := getDentry(txn, parent, a)
		if err != nil {
			return err
		}
		bIno, bMode, err := getDentry(txn, parent, b)
		switch {
		case errors.Is(err, syscall.ENOENT):
			err = txn.Delete(dentryKey(parent, a))
		case err == nil:
			err = txn.Set(dentryKey(parent, a), encodeDentry(bIno, bMode))
		}
		if err != nil {
			return err
		}
		if err := txn.Set(dentryKey(parent, b), encodeDentry(aIno, aMode)); err != nil {
			return err
		}
		return touchDir(txn, parent)
	})
}

// Update applies fn to the stored inode in one transaction and returns the
// new record. syscall.ENOENT if the inode was removed meanwhile.
func (s *Namespace) Update(ino uint64, fn func(*Inode) error) (*Inode, error) {
	var in *Inode
	err := s.updateRecords(func(txn *badger.Txn, ch *changes) error {
		var err error
		if in, err = getInode(txn, ino); err != nil {
			return err
		}
		before := *in
		if err := fn(in); err != nil {
			return err
		}
		ch.note(RecordChange{Before: &before, After: in})
		return putInode(txn, in)
	})
	return in, err
}

// Resolve walks a slash-separated path from the root ("" or "/" is the root).
func (s *Namespace) Resolve(p string) (*Inode, error) {
	in, err := s.GetInode(RootIno)
	for _, name := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if err != nil || name == "" {
			break
		}
		in, err = s.Lookup(in.Ino, name)
		if errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("%s: no such file or directory: %w", p, err)
		}
	}
	return in, err
}

// MkdirAll makes the folders of slash-separated path p that are missing and
// returns the last one's inode number ("" and "." are the root).
func (s *Namespace) MkdirAll(p string) (uint64, error) {
	ino := RootIno
	if p == "." || p == "" {
		return ino, nil
	}
	for _, name := range strings.Split(p, "/") {
		in, err := s.Lookup(ino, name)
		if errors.Is(err, syscall.ENOENT) {
			now := time.Now().UnixNano()
			in, err = s.Create(ino, name, Inode{Mode: syscall.S_IFDIR | 0o755, Atime: now, Mtime: now, Ctime: now})
		}
		if err == nil && in.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			err = syscall.ENOTDIR
		}
		if err != nil {
			return 0, fmt.Errorf("mkdir %s: %w", p, err)
		}
		ino = in.Ino
	}
	return ino, nil
}

// Walk calls fn for every entry below directory ino, depth first, with
// paths relative to it. Directories are visited before their contents. It
// stops at the first record that does not read.
func (s *Namespace) Walk(ino uint64, fn func(rel string, in *Inode) error) error {
	return s.WalkAll(ino, "", fn, func(_ string, _ uint64, err error) error { return err })
}

// WalkAll is Walk that hands each record that does not read, with its path
// and inode number, to bad, and goes on if bad returns nil: into a
// directory whose own record is damaged too, by its entries.
func (s *Namespace) WalkAll(ino uint64, dir string, fn func(rel string, in *Inode) error, bad func(rel string, ino uint64, err error) error) error {
	entries, err := s.ReadDir(ino)
	if err != nil {
		if err := bad(dir, ino, err); err != nil {
			return err
		}
	}
	for _, e := range entries {
		rel := path.Join(dir, e.Name)
		child, err := s.GetInode(e.Ino)
		if err != nil {
			err = bad(rel, e.Ino, fmt.Errorf("%s: %w", rel, err))
		} else {
			err = fn(rel, child)
		}
		if err != nil {
			return err
		}
		if e.Mode == syscall.S_IFDIR {
			if err := s.WalkAll(e.Ino, rel, fn, bad); err != nil {
				return err
			}
		}
	}
	return nil
}

// RemoveAll deletes name in parent and everything below it. Chunks stay
// until gc.
func (s *Namespace) RemoveAll(parent uint64, name string) error {
	in, err := s.Lookup(parent, name)
	if err != nil {
		return err
	}
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		entries, err := s.ReadDir(in.Ino)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := s.RemoveAll(in.Ino, e.Name); err != nil {
				return err
			}
		}
	}
	return s.Remove(parent, name, in.Mode&syscall.S_IFMT == syscall.S_IFDIR)
}

// Unlink removes every directory entry of non-directory ino, wherever it
// is, and with the last its record, and returns the paths it had. It reads
// every entry of the namespace: it is for recovery, not for users.
func (s *Namespace) Unlink(ino uint64) ([]string, error) {
	type entry struct {
		parent uint64
		name   string
	}
	dirs := map[uint64]entry{} // a directory's entry, to name paths
	var links []entry
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixDentry}, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) < 9 {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			child, mode, err := decodeDentry(v)
			if err != nil {
				continue
			}
			e := entry{binary.BigEndian.Uint64(k[1:9]), string(k[9:])}
			switch {
			case child == ino:
				links = append(links, e)
			case mode == syscall.S_IFDIR:
				dirs[child] = e
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, l := range links {
		p := l.name
		for parent, depth := l.parent, 0; parent != RootIno && depth < 4096; depth++ {
			d, ok := dirs[parent]
			if !ok {
				break
			}
			p, parent = d.name+"/"+p, d.parent
		}
		paths = append(paths, p)
		if err := s.Remove(l.parent, l.name, false); err != nil && !errors.Is(err, syscall.ENOENT) {
			return paths, err
		}
	}
	return paths, nil
}

// InodeKeys calls fn with the key of every inode record, reachable or not.
func (s *Namespace) InodeKeys(fn func(key []byte) error) error {
	return s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{PrefixInode}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := fn(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ScanEntries calls fn with every directory entry: the folder it is in, its
// name, the inode it names and that inode's type bits. For a snapshot's
// whole namespace in one pass, where a walk reads a record per entry.
func (s *Namespace) ScanEntries(fn func(parent uint64, name string, ino uint64, mode uint32) error) error {
	return s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixDentry}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) < 9 {
				return fmt.Errorf("directory entry key %x is malformed: %w", k, chunk.ErrCorrupt)
			}
			var ino uint64
			var mode uint32
			err := it.Item().Value(func(v []byte) error {
				var err error
				ino, mode, err = decodeDentry(v)
				return err
			})
			if err != nil {
				return err
			}
			if err := fn(binary.BigEndian.Uint64(k[1:9]), string(k[9:]), ino, mode); err != nil {
				return err
			}
		}
		return nil
	})
}

// ScanRecords calls fn with every inode record, reachable or not, in one
// pass. A record that does not decode is an error.
func (s *Namespace) ScanRecords(fn func(in *Inode) error) error {
	return s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{PrefixInode}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ino, ok := InodeOfKey(it.Item().Key())
			if !ok {
				return fmt.Errorf("inode key %x is malformed: %w", it.Item().Key(), chunk.ErrCorrupt)
			}
			var in *Inode
			err := it.Item().Value(func(v []byte) error {
				var err error
				in, err = DecodeInode(ino, v)
				return err
			})
			if err != nil {
				return fmt.Errorf("inode %d: %w", ino, err)
			}
			if err := fn(in); err != nil {
				return err
			}
		}
		return nil
	})
}
