package main

// The control socket lets the store commands run while the store is
// mounted, when Badger's lock is the daemon's: a client sends its command
// line and folder to STORE/control.sock, the daemon runs the command as
// this program would, on its open store, and streams back what it writes
// and its exit code. Only the daemon's user and root may connect: the
// socket is 0600, and each peer's uid is checked as well.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/writes"
	"golang.org/x/sys/unix"
)

const controlSocket = "control.sock"

// servedLive are the commands a mount's daemon runs for a client.
var servedLive = map[string]bool{"ls": true, "stat": true, "rm": true, "gc": true, "fsck": true, "import": true, "export": true}

// liveStore is what a command run in a mount's daemon works on.
type liveStore struct {
	store        *store.Store
	writes       *writes.Path
	mnt          string        // the mountpoint, which rm goes through
	reclaimAfter time.Duration // the daemon's --reclaim-after
	cwd          string        // the client's folder, for relative paths
	gone         chan struct{} // closed when the client closes its connection
	// checked, if set, runs between rm's check of a name in the store and
	// its removal through the mount: tests swap a path there.
	checked func(name string)
}

// controlRequest is what a client sends: one JSON line.
type controlRequest struct {
	Args []string `json:"args"`
	Cwd  string   `json:"cwd"`
}

// A reply is a run of frames: a kind byte, a 4-byte big-endian length and
// the payload. The last is the exit code, in decimal.
const (
	frameStdout = 1
	frameStderr = 2
	frameExit   = 3
	maxFrame    = 1 << 20
)

// requestTimeout bounds the wait for a client's request.
const requestTimeout = 10 * time.Second

// exitCode is the exit status of a command another process ran and
// reported on (its error is already printed).
type exitCode int

func (e exitCode) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// inStore names path name in the store directory dir through an open
// descriptor of dir, so that a store path too long for a socket address
// (108 bytes) still works; the caller closes the descriptor.
func inStore(dir, name string) (string, int, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, name), fd, nil
}

// controlServer serves the control socket of a mounted store.
type controlServer struct {
	a    *app
	live liveStore
	ln   *net.UnixListener
	wg   sync.WaitGroup
}

// serveControl listens on STORE/control.sock until stop is called.
func (a *app) serveControl(live liveStore) (stop func(), err error) {
	sock, fd, err := inStore(a.storeDir, controlSocket)
	if err != nil {
		return nil, fmt.Errorf("control socket in %s: %w", a.storeDir, err)
	}
	defer unix.Close(fd)
	os.Remove(sock) // a crashed daemon's; the store lock is ours
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", filepath.Join(a.storeDir, controlSocket), err)
	}
	ln.SetUnlinkOnClose(false) // removed by path below; the fd path is gone by then
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	srv := &controlServer{a: a, live: live, ln: ln}
	srv.wg.Add(1)
	go srv.accept()
	return func() {
		ln.Close()
		os.Remove(filepath.Join(a.storeDir, controlSocket))
		srv.wg.Wait()
	}, nil
}

func (srv *controlServer) accept() {
	defer srv.wg.Done()
	for {
		conn, err := srv.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				srv.a.log.Warn("control socket", "err", err)
			}
			return
		}
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			defer conn.Close()
			srv.serve(conn)
		}()
	}
}

// serve runs one client's command.
func (srv *controlServer) serve(conn *net.UnixConn) {
	out := &frameWriter{w: conn}
	stdout, stderr := out.stream(frameStdout), out.stream(frameStderr)
	// The request first, whoever sent it (it is small), so that a refused
	// client reads its refusal instead of a broken pipe.
	var req controlRequest
	// A client that connects and says nothing would hold the unmount (stop
	// waits for every connection): the request has a deadline.
	conn.SetReadDeadline(time.Now().Add(requestTimeout))
	if err := json.NewDecoder(io.LimitReader(conn, maxFrame)).Decode(&req); err != nil {
		fmt.Fprintln(stderr, "ckptfs: control request:", err)
		out.exit(2)
		return
	}
	conn.SetReadDeadline(time.Time{})
	if err := checkPeer(conn); err != nil {
		fmt.Fprintln(stderr, "ckptfs:", err)
		out.exit(1)
		return
	}
	live := srv.live
	live.cwd = req.Cwd
	live.gone = make(chan struct{})
	go func() { // a client sends nothing more: a read ends when it goes
		io.Copy(io.Discard, conn)
		close(live.gone)
	}()
	b := &app{storeDir: srv.a.storeDir, args: req.Args, stdout: stdout, stderr: stderr, live: &live}
	root := b.rootCmd(b.importCmd(), b.exportCmd(), b.lsCmd(), b.statCmd(), b.rmCmd(), b.gcCmd(), b.fsckCmd())
	srv.a.log.Info("control", "args", req.Args)
	if err := root.Execute(); err != nil {
		srv.a.log.Info("control command failed", "args", req.Args, "err", err)
		fmt.Fprintln(stderr, "ckptfs:", err)
		out.exit(1)
		return
	}
	out.exit(0)
}

// checkPeer refuses a client that is neither this process's user nor root.
func checkPeer(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("uid %d may not use this store's control socket", cred.Uid)
	}
	return nil
}

// frameWriter writes frames to a client, one at a time.
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// frame sends one frame. What a client gone away misses is dropped: the
// command learns of it from clientGone, not from its writes.
func (f *frameWriter) frame(kind byte, p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hdr := binary.BigEndian.AppendUint32([]byte{kind}, uint32(len(p)))
	f.w.Write(append(hdr, p...))
}

func (f *frameWriter) exit(code int) { f.frame(frameExit, []byte(strconv.Itoa(code))) }

// stream is an io.Writer of one kind of frame.
func (f *frameWriter) stream(kind byte) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		for rest := p; len(rest) > 0; {
			n := min(len(rest), maxFrame)
			f.frame(kind, rest[:n])
			rest = rest[n:]
		}
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

// dialControl connects to the control socket of the daemon that holds the
// store, if this command is one a daemon runs and one answers; nil
// otherwise.
func (a *app) dialControl() net.Conn {
	if !servedLive[a.command] {
		return nil
	}
	sock, fd, err := inStore(a.storeDir, controlSocket)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.Debug("control socket", "err", err) // a crashed daemon's, or another user's
		}
		return nil
	}
	return conn
}

// forward runs this command in the daemon on the other end of conn, and
// copies what it writes here.
func (a *app) forward(conn net.Conn) error {
	defer conn.Close()
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	// The store as this process resolved it, so the daemon prints the same.
	req := controlRequest{Args: append([]string{"--store", a.storeDir}, a.args...), Cwd: cwd}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	return a.copyReply(bufio.NewReader(conn))
}

// copyReply copies a daemon's reply to stdout and stderr and returns its
// exit code.
func (a *app) copyReply(r io.Reader) error {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return fmt.Errorf("the mount's daemon ended the command without an exit code: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > maxFrame {
			return fmt.Errorf("control socket: frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		switch hdr[0] {
		case frameStdout:
			a.stdout.Write(p)
		case frameStderr:
			a.stderr.Write(p)
		case frameExit:
			code, err := strconv.Atoi(string(p))
			if err != nil {
				return fmt.Errorf("control socket: exit code %q", p)
			}
			if code == 0 {
				return nil
			}
			return exitCode(code)
		default:
			a.log.Debug("control socket: unknown frame", "kind", hdr[0])
		}
	}
}
