package meta

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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
