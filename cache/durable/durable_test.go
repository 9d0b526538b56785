package durable

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// File and Dir sync what they are given and name it in their errors.
func TestSyncsAndNamesWhatFails(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("durable")
	if err := File(f); err != nil {
		t.Fatal(err)
	}
	if err := Dir(dir); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := File(f); err == nil || !strings.Contains(err.Error(), f.Name()) {
		t.Fatalf("sync of a closed file: %v", err)
	}
	missing := filepath.Join(dir, "none")
	if err := Dir(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("sync of a missing folder: %v", err)
	}
}
