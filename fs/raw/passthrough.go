package raw

import (
	"log/slog"
	"os"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// ProbePassthrough reports whether the kernel takes backing files from
// server (a kernel of 6.9 or later, and CAP_SYS_ADMIN), trying one made in
// dir, and logs which write path the mount uses.
func ProbePassthrough(server *fuse.Server, dir string, log *slog.Logger) bool {
	f, err := os.CreateTemp(dir, ".passthrough-probe-*")
	if err != nil {
		log.Warn("writes go through the daemon: no probe file", "err", err)
		return false
	}
	defer os.Remove(f.Name())
	defer f.Close()
	id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		log.Info("writes go through the daemon: the kernel takes no backing files (FUSE passthrough needs Linux 6.9 and CAP_SYS_ADMIN)", "err", errno)
		return false
	}
	server.UnregisterBackingFd(id)
	log.Info("writes of new and truncated files go to their backing files (FUSE passthrough)")
	return true
}
