package chunkcache

import (
	"bytes"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// Decoded chunks of more than half a buffer are decoded into buffers used
// again once no reader holds them: a fresh 1 MiB slice a chunk is zeroed
// by the runtime before the decoder overwrites every byte, which was 16%
// of the daemon's CPU in a cold read.
const (
	bufSize = chunk.MaxSize
	bufMin  = bufSize/2 + 1
)

// buffers holds decode buffers no chunk uses any more.
type buffers struct{ pool sync.Pool }

// get returns an empty buffer of capacity bufSize.
func (b *buffers) get() []byte {
	if p, ok := b.pool.Get().(*[]byte); ok && cap(*p) >= bufSize {
		return (*p)[:0]
	}
	return make([]byte, 0, bufSize)
}

// decodedInto reports whether data is buf's own bytes from its start:
// then the chunk holds the buffer. Bytes elsewhere in buf would be
// counted by no one; those are copied out (no codec returns them today).
func decodedInto(data, buf []byte) (holds bool, out []byte) {
	if len(data) == 0 {
		return false, data
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	switch {
	case at == start:
		return true, data
	case at > start && at < start+uintptr(cap(buf)):
		return false, bytes.Clone(data)
	}
	return false, data
}

func (b *buffers) put(buf []byte) {
	buf = buf[:0]
	b.pool.Put(&buf)
}

// entry is a decoded chunk and the count of those holding it: the LRU
// while it keeps it, each reader until it releases it, and the load that
// made it until it has handed it out. The last one to let go gives its
// buffer back, if it came from the buffers.
type entry struct {
	data []byte
	refs atomic.Int32
	bufs *buffers // nil: left to the garbage collector
}

func (e *entry) hold() { e.refs.Add(1) }

// chunk is e as a reader holds it; the caller has taken its hold.
func (e *entry) chunk() Chunk { return Chunk{e.data, e} }

func (e *entry) release() {
	if e.refs.Add(-1) == 0 && e.bufs != nil {
		e.bufs.put(e.data)
	}
}

// Chunk is a decoded chunk a reader holds: Data stays as it is until
// Release, after which the reader must not touch it, as its buffer may
// then hold another chunk. The zero Chunk holds nothing.
type Chunk struct {
	Data []byte
	e    *entry
}

// Release lets go of the chunk; call it once.
func (c Chunk) Release() {
	if c.e != nil {
		c.e.release()
	}
}
