// Package localfs is the local side of import, export and rm: trees
// copied in from local disk and written out to it, and paths removed below
// a mountpoint, each walked from a folder descriptor and never resolved by
// name across a symlink (see beneath.go).
package localfs

// Commands run in a mount's daemon run as root, on paths other users may
// change meanwhile: a folder of theirs swapped for a symlink between a
// check and a use would make root remove or create files anywhere. So
// below a folder held open, paths are resolved with openat2, which
// refuses symlinks, ".." and other mounts on the way, and entries are
// made and changed through descriptors of the folders that hold them.

import (
	"errors"
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// beneath is how a path below a folder held open is resolved.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV

// OpenBeneath opens rel, a relative path, below the folder open as dirfd;
// mode is a new file's, with O_CREAT.
func OpenBeneath(dirfd int, rel string, flags int, mode uint32) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: beneath}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(mode)
	}
	return unix.Openat2(dirfd, rel, how)
}

// parentBeneath opens the folder that holds rel below dirfd (O_PATH), and
// returns it with rel's last name.
func parentBeneath(dirfd int, rel string) (int, string, error) {
	dir, name := path.Split(rel)
	if dir == "" {
		dir = "."
	}
	fd, err := OpenBeneath(dirfd, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, name, err
}

// RemoveBeneath removes rel, a clean relative path below the folder root,
// and all it holds, as rm -r does, without following a symlink or leaving
// root's file system: a folder on the way swapped for a symlink fails the
// removal (ELOOP), and one swapped inside the tree is removed as the
// symlink it has become.
func RemoveBeneath(root, rel string) error {
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootfd)
	parent, name, err := parentBeneath(rootfd, rel)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	return removeAt(parent, name)
}

// removeAt removes name from the folder dirfd; a folder, with all it holds.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return err
	}
	for {
		fd, err := OpenBeneath(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		dir := os.NewFile(uintptr(fd), name)
		names, err := dir.Readdirnames(1024)
		if err != nil && err != io.EOF {
			dir.Close()
			return err
		}
		for _, child := range names {
			if err := removeAt(fd, child); err != nil {
				dir.Close()
				return err
			}
		}
		// Read again from a new descriptor: removing entries may have
		// moved the others past the old one's offset.
		dir.Close()
		if len(names) == 0 {
			break
		}
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}
