package meta

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// ErrDamagedTable marks a Badger table that fails its checksums.
var ErrDamagedTable = errors.New("damaged table")

// CheckTables verifies every block of every table Badger opened. Badger's
// read path takes a block that fails its checksum for keys that are not
// there, so a file would silently vanish instead of failing. The returned
// error names each damaged table.
func CheckTables(db *badger.DB, dbDir string) error {
	var errs []error
	for _, ti := range db.Tables() {
		p := filepath.Join(dbDir, table.IDToFilename(ti.ID))
		if err := checkTable(p); err != nil && !errors.Is(err, fs.ErrNotExist) { // gone: compacted meanwhile
			errs = append(errs, fmt.Errorf("%w %s: %v", ErrDamagedTable, p, err))
		}
	}
	return errors.Join(errs...)
}

// checkTable returns the first damage found in one table file.
func checkTable(path string) (err error) {
	defer func() {
		if r := recover(); r != nil { // Badger panics on some damage
			err = fmt.Errorf("unreadable: %v", r)
		}
	}()
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	t, err := table.OpenTable(mf, table.Options{ChkMode: options.NoVerification})
	if err != nil {
		return err // OpenTable closed mf
	}
	defer mf.Close(-1)
	// Without verification on block reads, this checks every block itself.
	return t.VerifyChecksum()
}

// openedTable finds the table a Badger open error names.
var openedTable = regexp.MustCompile(`Opening table: "([^"]+)"`)

// DamagedOnOpen returns err as a damaged table, named, when Badger failed
// to open a table on its checksum: it reads a table's edge blocks as it
// opens it, so damage there refuses the store before CheckTables can run.
// It returns nil for any other error.
func DamagedOnOpen(err error) error {
	m := openedTable.FindStringSubmatch(err.Error())
	if m == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		return nil
	}
	return fmt.Errorf("%w %s: %v", ErrDamagedTable, m[1], err)
}

// Open opens a Badger database. Badger panics on some damage it meets while
// opening tables; that is returned as an error, so a damaged store is
// refused with a message instead of a crash.
func Open(opts badger.Options) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w in %s: badger: %v", ErrDamagedTable, opts.Dir, r)
		}
	}()
	return badger.Open(opts)
}
