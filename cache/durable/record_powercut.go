//go:build powercut

package durable

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// A daemon built with -tags powercut appends to $CKPTFS_POWERCUT_LOG what
// each sync made durable, for the power-cut tests: a file's identity and
// its size when the sync began ("file ID SIZE"), or a directory's path and
// the identities of its entries then ("dir PATH ID..."). A file is named
// by its inode number and birth time, which outlive renames and are never
// shared by two files at once. The tests then cut: every file of the store
// loses what it gained after its last recorded sync, and a file no synced
// listing of its directory holds goes.
var powercut struct {
	once sync.Once
	mu   sync.Mutex
	log  *os.File
}

func logLine(line string) {
	powercut.once.Do(func() {
		if p := os.Getenv("CKPTFS_POWERCUT_LOG"); p != "" {
			powercut.log, _ = os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		}
	})
	if powercut.log == nil {
		return
	}
	powercut.mu.Lock()
	defer powercut.mu.Unlock()
	powercut.log.WriteString(line + "\n")
}

// fileID names a file by inode number and birth time.
func fileID(fd int) (string, int64, error) {
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_INO|unix.STATX_BTIME|unix.STATX_SIZE, &st); err != nil {
		return "", 0, err
	}
	return fmt.Sprintf("%d.%d.%d", st.Ino, st.Btime.Sec, st.Btime.Nsec), int64(st.Size), nil
}

func noteFile(f *os.File) func() {
	id, size, err := fileID(int(f.Fd()))
	if err != nil {
		return func() {}
	}
	return func() { logLine(fmt.Sprintf("file %s %d", id, size)) }
}

func noteDir(d *os.File) func() {
	names, err := d.Readdirnames(-1)
	if err != nil {
		return func() {}
	}
	fields := []string{"dir", d.Name()}
	for _, n := range names {
		fd, err := unix.Openat(int(d.Fd()), n, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if id, _, err := fileID(fd); err == nil {
			fields = append(fields, id)
		}
		unix.Close(fd)
	}
	return func() { logLine(strings.Join(fields, " ")) }
}
