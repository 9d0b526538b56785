// Command ckptfs mounts, fills and inspects a ckptfs checkpoint store.
package main

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/writes"
	"github.com/spf13/cobra"
)

// versionFile holds the release in one place: the Python wheel's builder
// reads the same file.
//
//go:embed VERSION
var versionFile string

// version is the release ckptfs --version prints.
func version() string { return strings.TrimSpace(versionFile) }

// app holds the flags shared by every command, and where it writes.
type app struct {
	storeDir string
	logLevel string
	log      *slog.Logger
	args     []string // the command line, as cobra reads it
	command  string   // the name of the command running

	stdout, stderr io.Writer
	// writes is the write path of the store withStore opened to change.
	writes *writes.Path
	// live is the store of the mount this command runs in, on behalf of a
	// client of its control socket (see control.go); nil in a plain run.
	live *liveStore
}

func main() {
	a := &app{args: os.Args[1:], stdout: os.Stdout, stderr: os.Stderr}
	if isMountHelper(os.Args[0]) {
		args, err := mountHelperArgs(os.Args[1:])
		if err != nil {
			fmt.Fprintln(os.Stderr, filepath.Base(os.Args[0])+":", err)
			os.Exit(1)
		}
		a.args = args
		// mount(8) runs helpers with an empty environment.
		if os.Getenv("PATH") == "" {
			os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
		}
	}
	root := a.rootCmd(a.mountCmd(), a.umountCmd(), a.importCmd(), a.exportCmd(),
		a.lsCmd(), a.statCmd(), a.rmCmd(), a.gcCmd(), a.fsckCmd(), a.pushCmd(), a.pullCmd())
	if err := root.Execute(); err != nil {
		var exit exitCode
		if !errors.As(err, &exit) { // a forwarded command printed its own error
			fmt.Fprintln(os.Stderr, "ckptfs:", err)
			exit = 1
		}
		os.Exit(int(exit))
	}
}

// rootCmd is the command line of ckptfs with the given commands.
func (a *app) rootCmd(cmds ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:   "ckptfs",
		Short: "A FUSE filesystem for model checkpoints",
		Long: `ckptfs stores checkpoints chunked, deduplicated, compressed and checksummed,
and mounts them as a filesystem. Besides each folder as written, a folder with
weights DIR (safetensors, or PyTorch .bin read without unpickling) can be
read as

  DIR@single/            one model.safetensors holding every tensor
  DIR@shards/            HF sharded folder, max shard size 5GB
  DIR@shards=SIZE/       the same at SIZE (500MB, 2GiB, ...)

computed on the fly. The store is $CKPTFS_STORE, else $XDG_DATA_HOME/ckptfs
(~/.local/share/ckptfs), unless --store is given.

ls, stat, rm, gc, fsck, import and export work whether or not the store is
mounted: against a running mount they run in its daemon, reached through
STORE/control.sock (owner only), with the same output.`,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(a.logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", a.logLevel)
			}
			a.command = cmd.Name()
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
			if a.live == nil {
				slog.SetDefault(a.log)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&a.storeDir, "store", defaultStore(), "store directory")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.Flags().BoolP("version", "v", false, "print the version of ckptfs and exit")
	root.AddCommand(cmds...)
	root.SetArgs(a.args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	return root
}

func defaultStore() string {
	if d := os.Getenv("CKPTFS_STORE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "ckptfs")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "ckptfs-store"
	}
	return filepath.Join(home, ".local", "share", "ckptfs")
}

// openStore opens the store, explaining who holds it when it is locked.
func (a *app) openStore(o store.Options) (*store.Store, error) {
	o.Logger = a.log
	s, err := store.Open(a.storeDir, o)
	if o.ReadOnly && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s: nothing was saved there yet", errNoStore, a.storeDir)
	}
	if errors.Is(err, store.ErrLocked) {
		if pid, mnt, ok := readPidFile(a.storeDir); ok {
			return nil, fmt.Errorf("store %s is mounted at %s by pid %d: run 'ckptfs umount %s' first", a.storeDir, mnt, pid, mnt)
		}
	}
	return s, err
}

// errNoStore is a store a command that only looks (ls, stat, fsck) found
// missing: it makes none.
var errNoStore = errors.New("no store")

// withStore runs fn on the open store and closes it after. When a mount
// holds the store, the whole command runs in the mount's daemon instead.
// A store opened to change opens its write path too (a.writes), which
// settles what a crash left staged before fn runs.
func (a *app) withStore(o store.Options, fn func(*store.Store) error) error {
	if a.live != nil {
		a.writes = a.live.writes
		return fn(a.live.store)
	}
	if conn := a.dialControl(); conn != nil {
		return a.forward(conn)
	}
	st, err := a.openStore(o)
	if err != nil {
		return err
	}
	defer st.Close()
	if !o.ReadOnly {
		if a.writes, err = writes.Open(st, writes.Options{Logger: a.log}); err != nil {
			return err
		}
		defer a.writes.Close()
	}
	return fn(st)
}

// localPath is p as the user meant it: relative to the client's folder
// when the command runs in a mount's daemon.
func (a *app) localPath(p string) string {
	if a.live == nil || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(a.live.cwd, p)
}

// pidFile records the mount daemon of a store: its pid and mountpoint.
func pidFile(store string) string { return filepath.Join(store, "mount.pid") }

func readPidFile(store string) (int, string, bool) {
	b, err := os.ReadFile(pidFile(store))
	if err != nil {
		return 0, "", false
	}
	var pid int
	var mnt string
	lines := strings.SplitN(string(b), "\n", 2)
	if _, err := fmt.Sscan(lines[0], &pid); err != nil || len(lines) < 2 {
		return 0, "", false
	}
	mnt = strings.TrimSpace(lines[1])
	return pid, mnt, true
}

// splitName parses a checkpoint path NAME or NAME/sub into clean elements.
func cleanName(name string) (string, error) {
	clean := filepath.ToSlash(filepath.Clean("/" + name))[1:]
	if clean == "" || strings.HasPrefix(name, "..") {
		return "", fmt.Errorf("%q is not a checkpoint name", name)
	}
	return clean, nil
}
