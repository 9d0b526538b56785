// Package durable makes file contents and directory entries durable with
// fsync(2). It is the one place the store syncs, so that a test build can
// record what each sync covered and simulate a power cut that drops the
// rest (see record_powercut.go).
package durable

import (
	"fmt"
	"os"
)

// File makes what was written to f durable.
func File(f *os.File) error {
	covered := noteFile(f) // what was written before the sync began
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	covered()
	return nil
}

// Dir makes the entries of directory dir durable: files created in it,
// renamed into it or removed from it.
func Dir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	covered := noteDir(d)
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	covered()
	return nil
}
