package compaction

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// With no compactors of Badger's own, the Compactor moves level-0 tables
// down as writes add them: writes never reach Badger's stall (which waits
// for a compaction nothing else would run), the tables leave level 0, and
// every value reads back, after a reopen too. An idle database is not
// compacted.
func TestCompactorKeepsLevelZeroBelowItsStall(t *testing.T) {
	dir := t.TempDir()
	opts := badger.DefaultOptions(dir).WithLogger(nil).
		WithNumCompactors(0).
		WithMemTableSize(1 << 20).
		WithBaseTableSize(256 << 10).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithValueThreshold(1 << 10)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	c := Start(db, slog.New(slog.DiscardHandler), 10*time.Millisecond)
	if c.due() {
		t.Fatal("an empty database is due a compaction")
	}
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 300) }
	const keys = 60000 // about 20 MiB of records: 20 memtables, five times the stall
	for i := 0; i < keys; i += 1000 {
		wb := db.NewWriteBatch()
		for j := i; j < i+1000; j++ {
			if err := wb.Set([]byte(fmt.Sprintf("k%08d", j*7919%keys)), value(j*7919%keys)); err != nil {
				t.Fatal(err)
			}
		}
		if err := wb.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	below := 0
	for _, l := range db.Levels()[1:] {
		below += l.NumTables
	}
	if below == 0 {
		t.Fatal("no table left level 0: nothing compacted")
	}
	c.Stop()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = badger.Open(opts); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(txn *badger.Txn) error {
		for i := range keys {
			item, err := txn.Get([]byte(fmt.Sprintf("k%08d", i)))
			if err != nil {
				return fmt.Errorf("key %d: %w", i, err)
			}
			if v, err := item.ValueCopy(nil); err != nil || !bytes.Equal(v, value(i)) {
				return fmt.Errorf("key %d: wrong value (%v)", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
