package reclaim

import (
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Pacer runs passes in the background: a pass starts `every` after a
// change of the namespace or the close of a file (Kick), and again after a
// pass that kept chunks only for being recent, and waits at least four
// times the CPU time the pass before took, so that reclaiming a large
// store takes at most a fifth of a core. CPU, not wall time: under load a
// pass waits for the disk and for stores, and four times that put minutes
// between a rotation and its space. The space of an `rm -r` is thus back
// within `every` plus a pass, or twice that for files written in the last
// pass (see the README for figures).
type Pacer struct {
	c     *Collector
	every time.Duration
	kicks chan struct{}
	done  chan struct{}
	wg    sync.WaitGroup
}

// StartPacer runs c's passes until Stop.
func StartPacer(c *Collector, every time.Duration) *Pacer {
	p := &Pacer{c: c, every: every, kicks: make(chan struct{}, 1), done: make(chan struct{})}
	p.wg.Add(1)
	go p.loop()
	return p
}

// Kick says the namespace changed; a nil Pacer ignores it.
func (p *Pacer) Kick() {
	if p == nil {
		return
	}
	select {
	case p.kicks <- struct{}{}:
	default:
	}
}

func (p *Pacer) loop() {
	defer p.wg.Done()
	runtime.LockOSThread() // so that the thread's CPU time is the passes'
	defer runtime.UnlockOSThread()
	rest := p.every
	for {
		select {
		case <-p.kicks:
		case <-p.done:
			return
		}
		select {
		case <-time.After(rest):
		case <-p.done:
			return
		}
		start, cpu := time.Now(), threadCPU()
		res, err := p.c.Pass()
		took := time.Since(start)
		rest = max(p.every, 4*(threadCPU()-cpu))
		log := p.c.Log
		if err != nil {
			log.Warn("reclaiming space failed; retrying after the next change", "err", err)
			continue
		}
		if res.Recent > 0 {
			p.Kick() // judged again by the next pass
		}
		log.Debug("reclaim pass", "weighed", res.Weighed, "chunks", res.Chunks, "recent", res.Recent,
			"packs_rewritten", res.PacksRewritten, "took", took.Round(time.Millisecond), "next_after", rest)
		if res.Chunks > 0 || res.PacksRemoved > 0 {
			log.Info("space reclaimed", "chunks", res.Chunks, "packs_removed", res.PacksRemoved,
				"packs_rewritten", res.PacksRewritten, "bytes_freed", res.PackBytesFreed, "took", took.Round(time.Millisecond))
		}
	}
}

// threadCPU is the CPU time of the calling thread, 0 if the kernel will
// not say.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Stop ends the loop after the pass under way; a nil Pacer has none.
func (p *Pacer) Stop() {
	if p == nil {
		return
	}
	close(p.done)
	p.wg.Wait()
}
