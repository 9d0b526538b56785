package chunkcache

import (
	"container/list"
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// lru holds decoded chunks up to a total number of bytes. Values are shared
// with readers and never modified.
type lru struct {
	mu    sync.Mutex
	max   int64
	used  int64
	order *list.List // front = most recently used
	items map[chunk.Hash]*list.Element
}

type lruEntry struct {
	h    chunk.Hash
	data []byte
}

func newLRU(max int64) *lru {
	return &lru{max: max, order: list.New(), items: map[chunk.Hash]*list.Element{}}
}

func (l *lru) get(h chunk.Hash) ([]byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[h]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*lruEntry).data, true
	}
	return nil, false
}

func (l *lru) contains(h chunk.Hash) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.items[h]
	return ok
}

func (l *lru) add(h chunk.Hash, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.items[h]; ok || int64(len(data)) > l.max {
		return
	}
	l.items[h] = l.order.PushFront(&lruEntry{h, data})
	l.used += int64(len(data))
	for l.used > l.max {
		e := l.order.Back()
		ent := e.Value.(*lruEntry)
		l.order.Remove(e)
		delete(l.items, ent.h)
		l.used -= int64(len(ent.data))
	}
}
