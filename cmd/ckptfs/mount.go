package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/ckptfs/ckptfs/cache/hot"
	"github.com/ckptfs/ckptfs/cache/remote"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/versions"
	"github.com/ckptfs/ckptfs/cache/writes"
	"github.com/ckptfs/ckptfs/fs"
	"github.com/ckptfs/ckptfs/fs/metrics"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

// readyFdEnv names the descriptor a background mount reports readiness on.
const readyFdEnv = "CKPTFS_READY_FD"

func (a *app) mountCmd() *cobra.Command {
	var opts fs.Options
	var foreground bool
	var cacheSize, hotSize, remoteCacheSize string
	var srv serveOptions
	cmd := &cobra.Command{
		Use:   "mount [--store DIR] MOUNTPOINT",
		Short: "Mount the store; returns once the mount is live",
		Long: `Mount the store at MOUNTPOINT (an existing empty directory). The command
returns once the mount answers; the daemon logs to STORE/ckptfs.log. With
--foreground it stays attached and Ctrl-C or SIGTERM unmounts cleanly.
Unmount with 'ckptfs umount MOUNTPOINT'.

A view file (DIR@single, DIR@shards) of 4 MiB or more opened a second time
gets a decoded copy in STORE/hot, made in the background from verified
chunks and fsynced before it outlives the daemon; later opens hand that copy to the
kernel (FUSE passthrough), which reads it as fast as a local file. --hot-size
bounds the copies, least recently used go first; 0 turns them off. The
default, auto, is a quarter of the disk's free space at mount; copies are
also dropped whenever the store itself would run short of space.
--hot-as-written gives files as written copies too; while a file is read
from its copy, opening it for writing or truncating it fails with ETXTBSY
(the kernel allows one kind of open per file), and loaders such as
from_pretrained keep the file mapped as long as the model lives.

Saves go to the local disk at its own speed where the kernel allows it
(Linux 6.9 or later, a daemon with CAP_SYS_ADMIN; the log says which): a
file root creates, or opens write-only when it is empty or with O_TRUNC,
while nothing else has it open, gets a backing file in STORE that the
kernel writes and reads itself (FUSE passthrough), with no round trip to
the daemon per write; a file still staged that root opens read-only gets
its staged file the same way. Every open of the file joins that backing
file until the last one closes (other users' opens for writing get
ETXTBSY meanwhile); close, fsync, truncate and utimens still reach the
daemon, which commits what it holds. Backing files are handed out while a
tenth of the disk is free; a root save larger than what is free can then
fill the disk past the store's reserves: --daemon-writes sends every
write through the daemon and its space guard.

Space comes back while mounted: --reclaim-after after a change (an rm, an
overwrite, a truncate), a background pass frees the chunks no file uses any
more, deletes packs left empty and rewrites packs a quarter garbage (at most
128 MiB/s of copying, and at most a fifth of a core however large the
store). Files still open, ingests under way and hot copies keep what they
read. 0 leaves it all to 'ckptfs gc'.

Saves wait for the disk, not for the codec: a file's bytes land in a staging
file as they are written, and close moves it to STORE/staged and commits it
as the content (visible at once, kept across a daemon crash). In the
background files 5 s old are then chunked, deduplicated and compressed,
oldest first, and each swaps to its chunks in one transaction (one removed
before, a rotated checkpoint, is never chunked); reads meanwhile come from
the staged file, and a view of the folder chunks it first. fsync makes the
staged file durable as it makes chunks durable. Until then a staged file
counts twice against the free space, as its chunks need room too; umount
chunks what is left first. --write-through chunks each file before its
close returns instead (as in front of a bucket, where it is always so).

Every chunk read is checked: the checksum of its stored payload (damage on
disk), the hash its pack record carries (a misplaced index entry) and its
length against the file's manifest; every payload was decoded and compared
with its bytes before it was stored (a codec bug). --verify-reads also
hashes every chunk decoded, as fsck, bucket fetches and pushes always do.

--metrics-addr serves Prometheus metrics at http://ADDR/metrics (--pprof adds
net/http/pprof under /debug/pprof/). --read-only refuses every change with
EROFS. SIGTERM or SIGINT unmounts; files still open for writing are
committed when they close, and the daemon exits after them.

--remote s3://BUCKET/PREFIX puts the store in front of an S3-compatible
bucket shared by several mounts (see 'ckptfs push --help' for its layout):
  - The store becomes a cache of the bucket: chunks are uploaded in the
    background as they are written, and close and fsync of a file return
    once its chunks and its checkpoint's manifest are in the bucket (an
    error there is EIO, and the mount retries every second).
  - Checkpoints other mounts publish appear within --remote-ttl; chunks are
    fetched when first read (16 at a time ahead of sequential reads) and
    verified against their hash, so a damaged object is EIO, never bytes.
  - --remote-cache-size bounds the chunks kept on local disk; chunks the
    bucket holds are evicted, oldest first. Hot copies (--hot-size) are
    separate.
  - Each top-level checkpoint has one writer: creating a name another mount
    holds is EEXIST, and changes to a checkpoint imported from another
    mount are refused on close.
  - A store used with a bucket is mounted with that bucket from then on.

mount(8) and /etc/fstab work through the helper mount.fuse.ckptfs (a link
to this program, installed by 'make install'):
  /var/lib/ckptfs  /mnt/ckpt  fuse.ckptfs  allow_other,cache_size=1GiB  0 0
The source is the store; options are the flags above with _ for -.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if err := checkMountpoint(mnt); err != nil {
				return err
			}
			size, err := humanize.ParseBytes(cacheSize)
			if err != nil {
				return fmt.Errorf("--cache-size %q: %w", cacheSize, err)
			}
			hot, err := parseHotSize(hotSize)
			if err != nil {
				return err
			}
			disk, err := humanize.ParseBytes(remoteCacheSize)
			if err != nil {
				return fmt.Errorf("--remote-cache-size %q: %w", remoteCacheSize, err)
			}
			if srv.pprof && srv.metricsAddr == "" {
				return errors.New("--pprof is served on --metrics-addr: give both")
			}
			if srv.metricsAddr != "" {
				if warning := exposureWarning(srv.metricsAddr, srv.pprof); warning != "" {
					fmt.Fprintln(os.Stderr, "warning:", warning)
				}
			}
			if !foreground {
				return a.mountBackground(mnt)
			}
			srv.cacheBytes, srv.hotBytes, srv.remoteDiskBytes = int64(size), int64(hot), int64(disk)
			return a.serve(mnt, opts, srv)
		},
	}
	cmd.Flags().BoolVarP(&foreground, "foreground", "f", false, "stay attached; Ctrl-C unmounts")
	cmd.Flags().BoolVar(&opts.AllowOther, "allow-other", false, "let other users access the mount (needs user_allow_other in /etc/fuse.conf for non-root)")
	cmd.Flags().BoolVar(&opts.ShowViews, "show-views", false, "list DIR@single and DIR@shards beside each folder with weights")
	cmd.Flags().BoolVar(&opts.Debug, "debug", false, "log every FUSE request")
	cmd.Flags().StringVar(&cacheSize, "cache-size", "128MiB", "memory for decoded chunks")
	cmd.Flags().StringVar(&hotSize, "hot-size", "auto", "disk for decoded copies of view files read often (auto: a quarter of the free space at mount; 0: none)")
	cmd.Flags().BoolVar(&opts.HotAsWritten, "hot-as-written", false, "give files as written hot copies too (writers then get ETXTBSY while one is read)")
	cmd.Flags().BoolVar(&opts.ReadOnly, "read-only", false, "refuse every change with EROFS")
	cmd.Flags().BoolVar(&opts.DaemonWrites, "daemon-writes", false, "send every write through the daemon (no backing files for the kernel to write)")
	cmd.Flags().BoolVar(&srv.verifyReads, "verify-reads", false, "hash every chunk read against its name, not only its checksum (fsck always does)")
	cmd.Flags().BoolVar(&srv.writeThrough, "write-through", false, "chunk and compress each file before its close returns, not in the background after")
	cmd.Flags().BoolVar(&srv.deltas, "deltas", true, "store each older version of a checkpoint file (the same name in a sibling folder) as deltas against the version saved after it, in the background")
	cmd.Flags().DurationVar(&srv.reclaimAfter, "reclaim-after", 5*time.Second, "free the space of removed and overwritten files this long after a change (0: only by 'ckptfs gc')")
	cmd.Flags().StringVar(&srv.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101)")
	cmd.Flags().BoolVar(&srv.pprof, "pprof", false, "also serve net/http/pprof under /debug/pprof/ on --metrics-addr")
	srv.remote.add(cmd, false)
	cmd.Flags().StringVar(&remoteCacheSize, "remote-cache-size", "32GiB", "with --remote: local disk for chunks; those in the bucket are evicted past it (0: no bound)")
	cmd.Flags().DurationVar(&srv.remoteTTL, "remote-ttl", 10*time.Second, "with --remote: how often checkpoints other mounts publish are looked for")
	return cmd
}

// hotDir is where a store's hot copies live.
func hotDir(store string) string { return filepath.Join(store, "hot") }

// parseHotSize reads --hot-size: a size, or auto (-1).
func parseHotSize(v string) (int64, error) {
	if v == "auto" {
		return -1, nil
	}
	n, err := humanize.ParseBytes(v)
	if err != nil {
		return 0, fmt.Errorf("--hot-size %q: %w", v, err)
	}
	return int64(n), nil
}

// freeBytes is the space free for dir's file system, 0 if unknown.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

func checkMountpoint(mnt string) error {
	st, err := os.Stat(mnt)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	entries, err := os.ReadDir(mnt)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("mountpoint %s is not empty", mnt)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found: install fuse3 (apt-get install -y fuse3, or dnf install -y fuse3)")
	}
	return nil
}

// mountBackground starts this program again in the foreground, detached,
// and waits until it reports the mount live or fails.
func (a *app) mountBackground(mnt string) error {
	if err := os.MkdirAll(a.storeDir, 0o700); err != nil {
		return fmt.Errorf("store %s: %w", a.storeDir, err)
	}
	logPath := filepath.Join(a.storeDir, "ckptfs.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logFile.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := append([]string{"--store", a.storeDir, "--log-level", a.logLevel}, a.args...)
	args = append(args, "--foreground")
	child := exec.Command(self, args...)
	child.Stdout, child.Stderr = logFile, logFile
	child.ExtraFiles = []*os.File{pw}
	child.Env = append(os.Environ(), readyFdEnv+"=3")
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	pw.Close()
	line, _ := bufio.NewReader(pr).ReadString('\n')
	if strings.TrimSpace(line) == "ok" {
		child.Process.Release()
		return nil
	}
	child.Wait()
	if msg := strings.TrimSpace(line); msg != "" {
		return errors.New(msg)
	}
	return fmt.Errorf("mount daemon exited; see %s", logPath)
}

// serveOptions are the daemon's settings beyond the file system's own.
type serveOptions struct {
	cacheBytes, hotBytes int64
	metricsAddr          string
	pprof                bool
	remote               remoteFlags
	remoteDiskBytes      int64
	remoteTTL            time.Duration
	reclaimAfter         time.Duration
	writeThrough         bool
	deltas               bool
	verifyReads          bool
}

// openBucket opens the bucket the store is to be in front of, nil if none.
func (so *serveOptions) openBucket() (*remote.Remote, error) {
	if so.remote.url == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return so.remote.open(ctx)
}

// serve mounts and serves until unmounted or signalled.
func (a *app) serve(mnt string, opts fs.Options, so serveOptions) (err error) {
	ready := func(msg string) {}
	if fd := os.Getenv(readyFdEnv); fd == "3" {
		f := os.NewFile(3, "ready")
		os.Unsetenv(readyFdEnv)
		ready = func(msg string) { fmt.Fprintln(f, msg); f.Close() }
		defer func() {
			if err != nil {
				ready(err.Error())
			}
		}()
	}
	// Reads decode chunks into buffers of their own; a soft limit makes
	// the collector keep the heap near what is live instead of doubling it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(so.cacheBytes + 192<<20)
	}
	bucket, err := so.openBucket()
	if err != nil {
		return err
	}
	storeOpts := store.Options{CacheBytes: so.cacheBytes, ReclaimEvery: so.reclaimAfter, Mounted: true, VerifyReads: so.verifyReads}
	if bucket != nil {
		storeOpts.Loaders = max(runtime.NumCPU(), 8) // fetches wait on the network, not the cores
	}
	store, err := a.openStore(storeOpts)
	if err != nil {
		return err
	}
	if u := store.RemoteURL(); u != "" && bucket == nil {
		store.Close()
		return fmt.Errorf("store %s is a cache of %s: mount it with --remote %s", a.storeDir, u, u)
	}
	defer func() {
		if cerr := store.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if so.deltas && bucket == nil { // a bucket holds plain values (see store.StoredValue)
		enc := versions.Start(store, versions.Options{Logger: a.log})
		defer enc.Close() // before the store closes
		store.FollowRecords(enc.Changed)
	}
	wp, err := writes.Open(store, writes.Options{Behind: !so.writeThrough, Logger: a.log})
	if err != nil {
		return err
	}
	defer wp.Close() // settles what is left, before the store closes
	opts.Logger = a.log
	if so.hotBytes < 0 { // auto
		so.hotBytes = freeBytes(a.storeDir) / 4
	}
	if so.hotBytes > 0 {
		if opts.HotFiles, err = hot.Open(hotDir(a.storeDir), so.hotBytes, a.log); err != nil {
			return err
		}
		store.SetMakeRoom(func(need int64) { opts.HotFiles.Drop(need) }) // the store's disk comes first
	}
	bucketMetrics := remote.NewMetrics()
	if bucket != nil {
		o := remote.Options{DiskBytes: so.remoteDiskBytes, MetadataTTL: so.remoteTTL, Logger: a.log, Metrics: bucketMetrics}
		if _, err := remote.Attach(store, bucket, o); err != nil {
			return fmt.Errorf("open store %s: %w", a.storeDir, err)
		}
	}
	opts.Metrics = metrics.New()
	if so.metricsAddr != "" {
		stop, err := serveMetrics(so.metricsAddr, so.pprof, a.log, store.Metrics().Collectors(), wp.Metrics().Collectors(), bucketMetrics.Collectors(), opts.Metrics.Collectors())
		if err != nil {
			return err
		}
		defer stop()
	}
	// Signals are caught before the mount is visible: a SIGINT in between
	// would kill the daemon with the default action and leave a dead mount
	// (ENOTCONN) for fusermount3 -u. One that comes before the mount is up
	// unmounts it as soon as it is.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	server, err := fs.Mount(mnt, store, wp, opts)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	raiseReadahead(mnt, a)
	if err := os.WriteFile(pidFile(a.storeDir), fmt.Appendf(nil, "%d\n%s\n", os.Getpid(), mnt), 0o600); err != nil {
		server.Unmount()
		return fmt.Errorf("pid file: %w", err)
	}
	defer os.Remove(pidFile(a.storeDir))
	stopControl, err := a.serveControl(liveStore{store: store, writes: wp, mnt: mnt, reclaimAfter: so.reclaimAfter})
	if err != nil {
		server.Unmount()
		return err
	}
	defer stopControl()
	a.log.Info("mounted", "mountpoint", mnt, "store", a.storeDir, "pid", os.Getpid())
	ready("ok")

	go func() {
		for s := range sig {
			a.log.Info("unmounting", "signal", s.String())
			if err := server.Unmount(); err != nil {
				a.log.Warn("unmount busy, detaching lazily", "err", err)
				exec.Command("fusermount3", "-u", "-z", mnt).Run()
			}
		}
	}()
	server.Wait()
	a.log.Info("unmounted", "mountpoint", mnt)
	return nil
}

// raiseReadahead lifts the kernel's readahead for the mount from 128 KiB to
// 2 MiB, which the FUSE protocol cannot ask for. Twice the 1 MiB preads
// loaders make, because the kernel takes a read longer than its window for
// a sequential one and reads a window ahead of it: with a window of 1 MiB
// a random 1 MiB pread at an unaligned offset (257 pages) read 2 MiB, and
// 4 threads of them ran at 0.28 GB/s against 0.41 with 2 MiB (preads
// longer than 2 MiB still get the second window).
func raiseReadahead(mnt string, a *app) {
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		return
	}
	major, minor := (st.Dev>>8)&0xfff, (st.Dev&0xff)|((st.Dev>>12)&0xfff00)
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	if err := os.WriteFile(path, []byte("2048"), 0o644); err != nil {
		a.log.Debug("readahead not raised", "path", path, "err", err)
	}
}

// waitGone waits for a process to exit.
func waitGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if exited(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// exited reports whether process pid has exited. The daemon's parent is
// init once mount returns, and init may reap it seconds later: a zombie
// whose threads are all gone holds no file, lock or mount any more, so it
// has exited too.
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z' {
		return false
	}
	threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(threads) <= 1
}
