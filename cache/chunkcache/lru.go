package chunkcache

import (
	"container/list"
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// lru holds decoded chunks up to a total number of bytes, each held (see
// entry) while it is kept. Values are shared with readers and never
// modified.
type lru struct {
	mu    sync.Mutex
	max   int64
	used  int64
	order *list.List // front = most recently used
	items map[chunk.Hash]*list.Element
}

type lruEntry struct {
	h chunk.Hash
	e *entry
}

func newLRU(max int64) *lru {
	return &lru{max: max, order: list.New(), items: map[chunk.Hash]*list.Element{}}
}

// get returns chunk h held for the caller, or nil. It is held under the
// lock, so an eviction cannot give its buffer back in between.
func (l *lru) get(h chunk.Hash) *entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.items[h]; ok {
		l.order.MoveToFront(el)
		e := el.Value.(*lruEntry).e
		e.hold()
		return e
	}
	return nil
}

func (l *lru) contains(h chunk.Hash) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.items[h]
	return ok
}

// add keeps e, held, unless the LRU has h or e is larger than it, and lets
// go of the least recently used past its bound. A buffer counts whole: a
// chunk of 513 KiB in a buffer used again takes 1 MiB.
func (l *lru) add(h chunk.Hash, e *entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.items[h]; ok || int64(cap(e.data)) > l.max {
		return
	}
	e.hold()
	l.items[h] = l.order.PushFront(&lruEntry{h, e})
	l.used += int64(cap(e.data))
	for l.used > l.max {
		el := l.order.Back()
		ent := el.Value.(*lruEntry)
		l.order.Remove(el)
		delete(l.items, ent.h)
		l.used -= int64(cap(ent.e.data))
		ent.e.release()
	}
}
