// Package fs is the ckptfs FUSE node tree: the as-written namespace the
// store holds (written through its write path), and the read-only
// translated views planned by the views package.
package fs

import (
	"context"
	"errors"
	"fmt"
	"github.com/ckptfs/ckptfs/fs/metrics"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/hot"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/views"
	"github.com/ckptfs/ckptfs/cache/writes"
	"github.com/ckptfs/ckptfs/fs/raw"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options configure a mount.
type Options struct {
	AllowOther bool
	ShowViews  bool // list DIR@single and DIR@shards in readdir
	Debug      bool
	Logger     *slog.Logger
	// HotFiles keeps decoded copies of view files read front to back, which
	// later opens hand to the kernel (FUSE passthrough); nil keeps none.
	HotFiles *hot.Files
	// HotAsWritten gives as-written files hot copies too. While one is read
	// from its copy its content cannot change (see hotopen.Opens), and loaders
	// that keep the file mapped hold it that long.
	HotAsWritten bool
	// ReadOnly mounts read-only: the kernel answers every change with EROFS.
	ReadOnly bool
	// DaemonWrites keeps every write on the daemon's path: no file gets a
	// backing file the kernel writes itself (see backed.go).
	DaemonWrites bool
	// Metrics counts what the mount serves; nil counts into metrics no one reads.
	Metrics *metrics.Metrics
}

// Store is what the mount uses of the store: its namespace, files'
// content, the pins that keep what open files read, and its folder.
type Store interface {
	Namespace() *meta.Namespace
	NewReader(name string, c *meta.Content) *store.FileReader
	Pin(cs ...*meta.Content) (unpin func())
	Dir() string
}

// FS holds what every node of one mount shares.
type FS struct {
	store   Store
	writes  *writes.Path
	hot     *hot.Files
	log     *slog.Logger
	opts    Options
	metrics *metrics.Metrics
	views   *views.Plans
	// passthrough says the kernel takes backing files (raw.ProbePassthrough).
	passthrough atomic.Bool
}

// timeout is the kernel's entry and attribute cache time. Every change goes
// through this process, so it could be longer; one second keeps views that
// follow a changing folder fresh.
const timeout = time.Second

// Mount serves store at dir, writing through w, and returns once the
// mount is live.
func Mount(dir string, store Store, w *writes.Path, opts Options) (*fuse.Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	fsys := &FS{store: store, writes: w, hot: opts.HotFiles, log: opts.Logger, opts: opts, metrics: opts.Metrics,
		views: views.NewPlans(store, w, opts.Logger)}
	to := timeout
	mo := fuse.MountOptions{
		FsName:        "ckptfs:" + store.Dir(),
		Name:          "ckptfs",
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		MaxBackground: 64,
		// The daemon clears set-ID bits itself (see raw.PrivDropper), and
		// truncates at an O_TRUNC open (a backing file starts empty).
		ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2 | fuse.CAP_ATOMIC_O_TRUNC,
		AllowOther:        opts.AllowOther,
		Options:           []string{"default_permissions"},
		Debug:             opts.Debug,
		DirectMount:       true,
		Logger:            slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug), // go-fuse's notes are chatty
	}
	if opts.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	// fs.Mount, with the raw request stream wrapped: set-ID bits dropped,
	// opens and releases of a node ordered, requests counted.
	nodes := fs.NewNodeFS(&dirNode{stored: stored{fsys, meta.RootIno}}, &fs.Options{
		MountOptions:   mo,
		EntryTimeout:   &to,
		AttrTimeout:    &to,
		RootStableAttr: &fs.StableAttr{Ino: meta.RootIno},
		Logger:         mo.Logger,
	})
	server, err := fuse.NewServer(opts.Metrics.Counted(raw.NewPrivDropper(raw.NewReleaseOrder(nodes), fsys.dropPrivs)), dir, &mo)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, err
	}
	if !opts.DaemonWrites && !opts.ReadOnly {
		fsys.passthrough.Store(raw.ProbePassthrough(server, store.Dir(), opts.Logger))
	}
	return server, nil
}

// toErrno maps store errors to the errno the kernel gets.
func toErrno(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && !errors.Is(err, chunk.ErrCorrupt) { // damage is EIO, whatever found it
		return errno
	}
	log.Error(op, "err", err)
	return syscall.EIO
}

// setAttr fills a FUSE attribute from a stored inode.
func setAttr(out *fuse.Attr, in *meta.Inode) {
	out.Ino = in.Ino
	out.Mode = in.Mode
	out.Uid, out.Gid = in.Uid, in.Gid
	out.Size = uint64(in.Content.Size)
	if in.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		out.Size = uint64(len(in.Target))
	}
	out.Nlink = in.Links()
	out.Rdev = in.Rdev
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		out.Nlink = 2
		out.Size = 4096
	}
	out.Blksize = 1 << 20
	out.Blocks = (out.Size + 511) / 512
	setTime := func(ns int64) (uint64, uint32) { return uint64(ns / 1e9), uint32(ns % 1e9) }
	out.Atime, out.Atimensec = setTime(in.Atime)
	out.Mtime, out.Mtimensec = setTime(in.Mtime)
	out.Ctime, out.Ctimensec = setTime(in.Ctime)
}

// newNode wraps a stored inode in the node type for its kind.
func (f *FS) newNode(ctx context.Context, parent *fs.Inode, in *meta.Inode) *fs.Inode {
	var node fs.InodeEmbedder
	st := stored{f, in.Ino}
	switch in.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		node = &dirNode{stored: st}
	case syscall.S_IFLNK:
		node = &symlinkNode{stored: st}
	case syscall.S_IFREG:
		n := &fileNode{stored: st}
		n.hot.Guard(&n.mu)
		node = n
	default: // FIFO, socket, device: the kernel serves their opens
		node = &specialNode{stored: st}
	}
	return parent.NewInode(ctx, node, fs.StableAttr{Mode: in.Mode & syscall.S_IFMT, Ino: in.Ino})
}

// syntheticIno numbers view nodes from their identity, in the upper half of
// the inode space so they never meet stored inode numbers.
func syntheticIno(parts ...any) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		fmt.Fprint(h, p)
		h.Write([]byte{0})
	}
	return 1<<63 | h.Sum64()>>1
}

func now() int64 { return time.Now().UnixNano() }

func statfs(store Store, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Statfs(store.Dir(), &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}
