package main

import (
	"errors"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress is a byte progress bar on the command's stderr, shown only on a
// terminal. It also stops the work it counts once the client of a command
// run in a mount's daemon has gone away (interrupted): the next count
// fails, so an export or import ends instead of going on unseen.
type progress struct {
	*progressbar.ProgressBar
	stopped func() error
}

func (a *app) newProgress(total int64, what string) *progress {
	f, isFile := a.stderr.(*os.File)
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(a.stderr),
		progressbar.OptionSetVisibility(isFile && term.IsTerminal(int(f.Fd()))),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	return &progress{ProgressBar: bar, stopped: a.clientGone}
}

func (p *progress) Write(b []byte) (int, error) {
	if err := p.stopped(); err != nil {
		return 0, err
	}
	return p.ProgressBar.Write(b)
}

func (p *progress) Add64(n int64) error {
	if err := p.stopped(); err != nil {
		return err
	}
	return p.ProgressBar.Add64(n)
}

var errClientGone = errors.New("stopped: the command's client went away")

// clientGone is errClientGone once the client of a command run in a
// mount's daemon has closed its connection; nil otherwise.
func (a *app) clientGone() error {
	if a.live == nil || a.live.gone == nil {
		return nil
	}
	select {
	case <-a.live.gone:
		return errClientGone
	default:
		return nil
	}
}
