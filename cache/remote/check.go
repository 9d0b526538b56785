package remote

import (
	"fmt"
	"path"
	"strings"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Bounds on a checkpoint manifest read from a bucket, besides its size
// (maxManifestSize).
const (
	maxManifestEntries = 1 << 20
	maxNameLen         = 255  // a name in a folder, as ext4 allows
	maxTargetLen       = 4096 // a symlink target, as PATH_MAX
)

// Validate checks a manifest read from a bucket, which another node (or
// anyone with write access to the bucket) wrote, as hostile input: names
// that are plain, unique and below an earlier folder; only files, folders
// and symlinks, each with only what its type has; chunk lengths that are
// possible and add up to the file's size. It clears set-user-ID and
// set-group-ID bits: another node's modes are not a reason to run
// something as its owner here.
func (m *Manifest) Validate(name string) error {
	if m.Name != name {
		return fmt.Errorf("it names checkpoint %q", m.Name)
	}
	if len(m.Entries) == 0 || len(m.Entries) > maxManifestEntries {
		return fmt.Errorf("%d entries, want 1 to %d", len(m.Entries), maxManifestEntries)
	}
	dirs := map[string]bool{}
	seen := map[string]bool{}
	for i := range m.Entries {
		e := &m.Entries[i]
		if err := e.validate(i == 0, dirs, seen); err != nil {
			return fmt.Errorf("entry %d (%q): %w", i, e.Path, err)
		}
		e.Mode &^= syscall.S_ISUID | syscall.S_ISGID
	}
	return nil
}

func (e *Entry) validate(root bool, dirs, seen map[string]bool) error {
	switch {
	case root && e.Path != "":
		return fmt.Errorf("the first entry must be the checkpoint itself")
	case !root:
		if err := PlainPath(e.Path); err != nil {
			return err
		}
		if parent := path.Dir(e.Path); !dirs[strings.TrimPrefix(parent, ".")] {
			return fmt.Errorf("not below an earlier folder")
		}
		if seen[e.Path] {
			return fmt.Errorf("listed twice")
		}
	}
	seen[e.Path] = true
	c := &e.Content
	switch e.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		dirs[e.Path] = true
		if e.Target != "" || c.Size != 0 || len(c.Chunks) != 0 {
			return fmt.Errorf("a folder with content")
		}
	case syscall.S_IFLNK:
		if e.Target == "" || len(e.Target) > maxTargetLen || strings.IndexByte(e.Target, 0) >= 0 {
			return fmt.Errorf("symlink target of %d bytes", len(e.Target))
		}
		if c.Size != 0 || len(c.Chunks) != 0 {
			return fmt.Errorf("a symlink with content")
		}
	case syscall.S_IFREG:
		if e.Target != "" {
			return fmt.Errorf("a file with a symlink target")
		}
		if c.Kind > meta.KindZip {
			return fmt.Errorf("unknown content kind %d", c.Kind)
		}
		var sum int64
		for _, ch := range c.Chunks {
			if ch.Len == 0 || ch.Len > chunk.MaxSize {
				return fmt.Errorf("chunk %s of %d bytes", ch.Hash.Short(), ch.Len)
			}
			sum += int64(ch.Len)
		}
		if sum != c.Size {
			return fmt.Errorf("chunks add to %d bytes, size is %d", sum, c.Size)
		}
	default:
		return fmt.Errorf("type %#o is not a file, folder or symlink", e.Mode&syscall.S_IFMT)
	}
	return nil
}

// PlainPath accepts a relative slash-separated path of names that a local
// file system can hold: no empty, ".", ".." or overlong name, no NUL.
func PlainPath(p string) error {
	if p == "" || path.Clean(p) != p || path.IsAbs(p) {
		return fmt.Errorf("not a plain relative path")
	}
	for _, name := range strings.Split(p, "/") {
		switch {
		case name == "." || name == "..":
			return fmt.Errorf("name %q", name)
		case len(name) > maxNameLen:
			return fmt.Errorf("a name of %d bytes, over %d", len(name), maxNameLen)
		case strings.IndexByte(name, 0) >= 0:
			return fmt.Errorf("a name with a NUL byte")
		}
	}
	return nil
}
