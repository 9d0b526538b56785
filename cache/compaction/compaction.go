// Package compaction compacts Badger's tables for a database opened with no
// compactors of its own.
package compaction

import (
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Compactor runs Badger's compactions for a database opened with no
// compactors of its own (WithNumCompactors(0)). Each of Badger's compactors
// wakes twenty times a second, busy or not: the minimum of two cost an idle
// daemon 0.8-1.1% of a core here, most of what one create and one rm a
// second cost it. The store's metadata changes slowly (a level fills after
// tens of MiB of records), so the compactor looks once per interval and
// compacts only a level over its target, as Badger's would.
type Compactor struct {
	db   *badger.DB
	log  *slog.Logger
	mu   sync.Mutex // one compaction at a time: Badger fails a second that overlaps
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start starts compacting db, looking every interval.
func Start(db *badger.DB, log *slog.Logger, interval time.Duration) *Compactor {
	c := &Compactor{db: db, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	go c.loop(interval)
	return c
}

func (c *Compactor) loop(interval time.Duration) {
	defer close(c.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if !c.due() {
			continue
		}
		if err := c.Flatten(); err != nil {
			// A full disk, say: writes stall at Badger's limit of level-0
			// tables until a later try succeeds.
			if failures++; failures%30 == 1 {
				c.log.Warn("metadata compaction failed, tried again every 10 s", "err", err, "failures", failures)
			}
			select {
			case <-c.stop:
				return
			case <-time.After(10 * time.Second):
			}
		} else {
			failures = 0
		}
	}
}

// due reports whether a level is over its target: level 0 over its table
// count, another over its size.
func (c *Compactor) due() bool {
	for _, l := range c.db.Levels() {
		if l.Score >= 1 {
			return true
		}
	}
	return false
}

// Flatten compacts until no level is over its target and the tables sit in
// one level: Badger's Flatten, the one compaction it exposes. When the
// tables below level 0 sit in one level, as after Flatten, and it is the
// base level (a store under about 100 MiB of records), that is Badger's own
// choice (level 0 into the base level). Above that level 0 goes to a base
// level above the last, and Flatten merges it into the last at once, where
// Badger would wait for it to fill: each look that finds level 0 full
// rewrites the last level, once per about 160 MiB of records written (five
// 32 MiB memtables). A tree of several levels (a store Badger's own
// compactors compacted) is merged into one at its first compaction.
func (c *Compactor) Flatten() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.db.Flatten(1)
}

// Stop ends the compactor; a compaction under way finishes first.
func (c *Compactor) Stop() {
	if c == nil {
		return
	}
	c.once.Do(func() { close(c.stop) })
	<-c.done
}
