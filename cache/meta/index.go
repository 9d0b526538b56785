package meta

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/pack"
	"github.com/dgraph-io/badger/v4"
)

// Index is the chunk index: where each chunk's record is (ChunkKey ->
// pack.Loc), the records each pack holds (packRecordKey -> hash, so that a
// pack's records are listed without reading the whole index), and which
// chunks a bucket holds (UploadedKey). The store decides when to change
// it; these are the only reads and writes of those keys.
type Index struct{ db *badger.DB }

// NewIndex is the chunk index in db.
func NewIndex(db *badger.DB) *Index { return &Index{db: db} }

// ErrNoChunk is a chunk the index does not hold.
var ErrNoChunk = errors.New("chunk missing")

// Record is a chunk's record in a pack.
type Record struct {
	Hash chunk.Hash
	Loc  pack.Loc
}

// packRecordKey lists the record at loc under its pack.
func packRecordKey(loc pack.Loc) []byte {
	k := binary.BigEndian.AppendUint32([]byte(prefixPackRecord), loc.Pack)
	return binary.BigEndian.AppendUint64(k, uint64(loc.Offset))
}

func packPrefix(id uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte(prefixPackRecord), id)
}

// Get is where chunk h is stored: ErrNoChunk, wrapped with
// chunk.ErrCorrupt (a chunk a file names and the index lacks is damage),
// if the index does not hold it.
func (x *Index) Get(h chunk.Hash) (pack.Loc, error) {
	var loc pack.Loc
	err := x.db.View(func(txn *badger.Txn) error {
		var err error
		loc, err = getLoc(txn, h)
		return err
	})
	return loc, err
}

func getLoc(txn *badger.Txn, h chunk.Hash) (pack.Loc, error) {
	item, err := txn.Get(ChunkKey(h))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return pack.Loc{}, fmt.Errorf("chunk %s: %w: %w", h.Short(), ErrNoChunk, chunk.ErrCorrupt)
	}
	if err != nil {
		return pack.Loc{}, fmt.Errorf("look up chunk %s: %w", h.Short(), err) // an I/O error stays one
	}
	var loc pack.Loc
	err = item.Value(func(v []byte) error {
		loc, err = pack.DecodeLoc(v)
		return err
	})
	return loc, err
}

// Put indexes chunk h at loc, listing it under its pack; with
// notUploaded, the mark that a bucket holds it goes in the same
// transaction. A record it replaces stays listed until Delete or Move.
func (x *Index) Put(h chunk.Hash, loc pack.Loc, notUploaded bool) error {
	return x.db.Update(func(txn *badger.Txn) error {
		if notUploaded {
			if err := txn.Delete(UploadedKey(h)); err != nil {
				return err
			}
		}
		if err := txn.Set(packRecordKey(loc), h[:]); err != nil {
			return err
		}
		return txn.Set(ChunkKey(h), loc.Encode())
	})
}

// Scan calls fn with every indexed chunk and its location, or the error
// that kept the location from being read.
func (x *Index) Scan(fn func(h chunk.Hash, loc pack.Loc, err error) error) error {
	return x.db.View(func(txn *badger.Txn) error {
		// Values are read where they lie: a prefetch would start a
		// goroutine per entry, for values of 16 bytes.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{PrefixChunk}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h chunk.Hash
			copy(h[:], it.Item().Key()[1:])
			var loc pack.Loc
			err := it.Item().Value(func(v []byte) error {
				var err error
				loc, err = pack.DecodeLoc(v)
				return err
			})
			if err := fn(h, loc, err); err != nil {
				return err
			}
		}
		return nil
	})
}

// InPack lists the records the index places in pack id: a listing entry
// whose chunk the index places elsewhere (moved, or stored again) is not
// one of them.
func (x *Index) InPack(id uint32) ([]Record, error) {
	var out []Record
	err := x.db.View(func(txn *badger.Txn) error {
		prefix := packPrefix(id)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != len(chunk.Hash{}) {
				return fmt.Errorf("pack listing %x is malformed: %w", it.Item().Key(), chunk.ErrCorrupt)
			}
			h := chunk.Hash(v)
			loc, err := getLoc(txn, h)
			if errors.Is(err, ErrNoChunk) {
				continue
			}
			if err != nil {
				return err
			}
			if loc.Pack == id && loc.Offset == int64(binary.BigEndian.Uint64(it.Item().Key()[len(prefix):])) {
				out = append(out, Record{h, loc})
			}
		}
		return nil
	})
	return out, err
}

// Delete drops the index entries of recs and their listings, and returns
// the references of those that were deltas: their dependency on them goes
// too.
func (x *Index) Delete(recs []Record) ([]chunk.Hash, error) {
	refs := map[chunk.Hash]chunk.Hash{}
	err := x.db.View(func(txn *badger.Txn) error {
		for _, r := range recs {
			ref, ok, err := getReference(txn, r.Hash)
			if err != nil {
				return err
			}
			if ok {
				refs[r.Hash] = ref
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	var freed []chunk.Hash
	for _, r := range recs {
		if err := wb.Delete(ChunkKey(r.Hash)); err != nil {
			return nil, err
		}
		if err := wb.Delete(packRecordKey(r.Loc)); err != nil {
			return nil, err
		}
		if ref, ok := refs[r.Hash]; ok {
			if err := wb.Delete(dependentKey(ref, r.Hash)); err != nil {
				return nil, err
			}
			if err := wb.Delete(referenceKey(r.Hash)); err != nil {
				return nil, err
			}
			freed = append(freed, ref)
		}
	}
	return freed, wb.Flush()
}

func dependentKey(ref, h chunk.Hash) []byte {
	return append(append([]byte(prefixDependent), ref[:]...), h[:]...)
}

func referenceKey(h chunk.Hash) []byte { return append([]byte(prefixReference), h[:]...) }

func getReference(txn *badger.Txn, h chunk.Hash) (chunk.Hash, bool, error) {
	item, err := txn.Get(referenceKey(h))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return chunk.Hash{}, false, nil
	}
	if err != nil {
		return chunk.Hash{}, false, err
	}
	var ref chunk.Hash
	err = item.Value(func(v []byte) error {
		if len(v) != len(ref) {
			return fmt.Errorf("reference of chunk %s is malformed: %w", h.Short(), chunk.ErrCorrupt)
		}
		copy(ref[:], v)
		return nil
	})
	return ref, err == nil, err
}

// Reference is the chunk h is stored as a delta against, if it is.
func (x *Index) Reference(h chunk.Hash) (ref chunk.Hash, ok bool, err error) {
	err = x.db.View(func(txn *badger.Txn) error {
		ref, ok, err = getReference(txn, h)
		return err
	})
	return ref, ok, err
}

// Dependents are the indexed chunks stored as deltas against ref: it
// stays while any does.
func (x *Index) Dependents(ref chunk.Hash) ([]chunk.Hash, error) {
	var out []chunk.Hash
	err := x.db.View(func(txn *badger.Txn) error {
		prefix := append([]byte(prefixDependent), ref[:]...)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefix)+len(ref) {
				return fmt.Errorf("dependency key %x is malformed: %w", k, chunk.ErrCorrupt)
			}
			h := chunk.Hash(k[len(prefix):])
			if _, err := getLoc(txn, h); errors.Is(err, ErrNoChunk) {
				continue // a deletion cut short left the key
			} else if err != nil {
				return err
			}
			out = append(out, h)
		}
		return nil
	})
	return out, err
}

// HasDeltas reports whether any chunk is stored as a delta.
func (x *Index) HasDeltas() (bool, error) {
	found := false
	err := x.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixReference)})
		defer it.Close()
		it.Rewind()
		found = it.Valid()
		return nil
	})
	return found, err
}

// References calls fn with every chunk stored as a delta and its
// reference, in one pass.
func (x *Index) References(fn func(h, ref chunk.Hash) error) error {
	return x.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixReference)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()[len(prefixReference):]
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(k) != len(chunk.Hash{}) || len(v) != len(chunk.Hash{}) {
				return fmt.Errorf("reference key %x is malformed: %w", it.Item().Key(), chunk.ErrCorrupt)
			}
			if err := fn(chunk.Hash(k), chunk.Hash(v)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Rebased is a chunk stored again as a delta against Ref, at To, where it
// was at From.
type Rebased struct {
	Hash     chunk.Hash
	Ref      chunk.Hash
	From, To pack.Loc
}

// Rebase points the index at the delta copies of the chunks still indexed
// where they were copied from, whose references are still indexed, and
// records each one's dependency on its reference, in one transaction (a
// delta is never indexed without the dependency that keeps its reference);
// it returns those it moved. A chunk deleted or moved meanwhile keeps its
// entry, and its copy is garbage.
func (x *Index) Rebase(rs []Rebased) ([]Rebased, error) {
	var done []Rebased
	err := x.db.Update(func(txn *badger.Txn) error {
		done = done[:0]
		for _, r := range rs {
			loc, err := getLoc(txn, r.Hash)
			if err != nil || loc != r.From {
				continue
			}
			if _, err := getLoc(txn, r.Ref); err != nil {
				continue
			}
			for _, kv := range [][2][]byte{
				{dependentKey(r.Ref, r.Hash), nil},
				{referenceKey(r.Hash), r.Ref[:]},
				{ChunkKey(r.Hash), r.To.Encode()},
				{packRecordKey(r.To), r.Hash[:]},
			} {
				if err := txn.Set(kv[0], kv[1]); err != nil {
					return err
				}
			}
			if err := txn.Delete(packRecordKey(r.From)); err != nil {
				return err
			}
			done = append(done, r)
		}
		return nil
	})
	return done, err
}

// Move is a record copied from one pack to another.
type Move struct {
	Hash     chunk.Hash
	From, To pack.Loc
}

// Move points the index at the copies of the moved records still indexed
// where they were copied from; a record deleted or moved meanwhile keeps
// its entry, and its copy is garbage. The listings of the old records go.
func (x *Index) Move(moves []Move) error {
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	for _, m := range moves {
		loc, err := x.Get(m.Hash)
		if err == nil && loc == m.From {
			if err := wb.Set(ChunkKey(m.Hash), m.To.Encode()); err != nil {
				return err
			}
			if err := wb.Set(packRecordKey(m.To), m.Hash[:]); err != nil {
				return err
			}
		}
		if err := wb.Delete(packRecordKey(m.From)); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// DropPack drops what is left of the listing of pack id once the pack is
// gone: entries of records stored again elsewhere since.
func (x *Index) DropPack(id uint32) error {
	var keys [][]byte
	err := x.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: packPrefix(id)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		return err
	}
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// Uploaded reports whether the bucket is known to hold chunk h.
func (x *Index) Uploaded(h chunk.Hash) (bool, error) {
	err := x.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(UploadedKey(h))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// MarkUploaded records that the bucket holds the chunks.
func (x *Index) MarkUploaded(hs ...chunk.Hash) error {
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	for _, h := range hs {
		if err := wb.Set(UploadedKey(h), nil); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// NotUploaded calls fn with every indexed chunk the bucket is not known to
// hold, and its location, in one pass over the index.
func (x *Index) NotUploaded(fn func(h chunk.Hash, loc pack.Loc) error) error {
	return x.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{PrefixChunk}, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h chunk.Hash
			copy(h[:], it.Item().Key()[1:])
			if _, err := txn.Get(UploadedKey(h)); err == nil {
				continue
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			var loc pack.Loc
			if err := it.Item().Value(func(v []byte) error {
				var err error
				loc, err = pack.DecodeLoc(v)
				return err
			}); err != nil {
				continue
			}
			if err := fn(h, loc); err != nil {
				return err
			}
		}
		return nil
	})
}

// listingVersion says the index lists each pack's records (InPack).
const listingVersion = 1

// EnsureListing lists the records of every pack, once, for an index built
// before packs were listed: one pass over the index.
func (x *Index) EnsureListing() error {
	var have bool
	err := x.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keyIndexVersion))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			have = len(v) == 1 && v[0] >= listingVersion
			return nil
		})
	})
	if err != nil || have {
		return err
	}
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	err = x.Scan(func(h chunk.Hash, loc pack.Loc, err error) error {
		if err != nil {
			return nil // a damaged entry is fsck's
		}
		return wb.Set(packRecordKey(loc), h[:])
	})
	if err == nil {
		err = wb.Set([]byte(keyIndexVersion), []byte{listingVersion})
	}
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return fmt.Errorf("list the records of every pack: %w", err)
	}
	return nil
}
