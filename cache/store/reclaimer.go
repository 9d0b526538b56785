package store

import (
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// reclaimer runs Reclaim in the background: a pass starts `every` after a
// change of the namespace or the close of a file, and again after a pass
// that kept chunks only for being recent, and waits at least four times
// the CPU time the pass before took, so that reclaiming a large store takes
// at most a fifth of a core. CPU, not wall time: under load a pass waits
// for the disk and for stores, and four times that put minutes between
// a rotation and its space. The space of an `rm -r` is thus back within
// `every` plus a pass, or twice that for files written in the last pass
// (see the README for figures).
type reclaimer struct {
	s     *Store
	every time.Duration
	kicks chan struct{}
	done  chan struct{}
	wg    sync.WaitGroup
}

func startReclaimer(s *Store, every time.Duration) *reclaimer {
	r := &reclaimer{s: s, every: every, kicks: make(chan struct{}, 1), done: make(chan struct{})}
	r.wg.Add(1)
	go r.loop()
	return r
}

// kick says the namespace changed; a nil reclaimer ignores it.
func (r *reclaimer) kick() {
	if r == nil {
		return
	}
	select {
	case r.kicks <- struct{}{}:
	default:
	}
}

func (r *reclaimer) loop() {
	defer r.wg.Done()
	runtime.LockOSThread() // so that the thread's CPU time is the passes'
	defer runtime.UnlockOSThread()
	rest := r.every
	for {
		select {
		case <-r.kicks:
		case <-r.done:
			return
		}
		select {
		case <-time.After(rest):
		case <-r.done:
			return
		}
		start, cpu := time.Now(), threadCPU()
		res, err := r.s.Reclaim()
		took := time.Since(start)
		rest = max(r.every, 4*(threadCPU()-cpu))
		if err != nil {
			r.s.log.Warn("reclaiming space failed; retrying after the next change", "err", err)
			continue
		}
		if res.Recent > 0 {
			r.kick() // judged again by the next pass
		}
		r.s.log.Debug("reclaim pass", "weighed", res.Weighed, "chunks", res.Chunks, "recent", res.Recent,
			"packs_rewritten", res.PacksRewritten, "took", took.Round(time.Millisecond), "next_after", rest)
		if res.Chunks > 0 || res.PacksRemoved > 0 {
			r.s.log.Info("space reclaimed", "chunks", res.Chunks, "packs_removed", res.PacksRemoved,
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

// stop ends the loop after the pass under way; a nil reclaimer has none.
func (r *reclaimer) stop() {
	if r == nil {
		return
	}
	close(r.done)
	r.wg.Wait()
}
