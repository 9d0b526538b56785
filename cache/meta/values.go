package meta

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// ErrNoValue is a key the database does not hold.
var ErrNoValue = errors.New("no such value")

// Values are the small records a store keeps besides its namespace and
// index: the bucket it caches and the state of that bucket's checkpoints
// (the Key and Prefix constants above). They share the namespace's
// database, so that one sync makes both durable.

// Value reads the value of key; ErrNoValue if there is none.
func (s *Namespace) Value(key string) ([]byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", key, ErrNoValue)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return v, nil
}

// SetValue sets the value of key; a nil v deletes it.
func (s *Namespace) SetValue(key string, v []byte) error {
	err := s.db.Update(func(txn *badger.Txn) error {
		if v == nil {
			return txn.Delete([]byte(key))
		}
		return txn.Set([]byte(key), v)
	})
	if err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	return nil
}

// Values reads every value under prefix, by key without the prefix.
func (s *Namespace) Values(prefix string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("read %s: %w", it.Item().Key(), err)
			}
			out[strings.TrimPrefix(string(it.Item().Key()), prefix)] = v
		}
		return nil
	})
	return out, err
}
