// Package raw wraps the mount's stream of FUSE requests where the node API
// cannot see or order them: the opens and releases of one node, the flags
// that drop set-ID bits, and the kernel's taking of backing files.
package raw

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// ReleaseOrder keeps the OPENs and the RELEASEs of one node apart: an
// open waits for a release of the node under way, and a release for the
// opens under way. go-fuse serves a RELEASE by calling the handle's
// Release and only then dropping the node's backing file id; an open in
// between would be handed the id of a backing file the release has just
// closed (a writer's bytes landing in a file no record names). The kernel
// drops its own backing before it sends RELEASE, so the wait costs an open
// only the release's commit.
type ReleaseOrder struct {
	fuse.RawFileSystem

	mu    sync.Mutex
	nodes map[uint64]*nodeOrder
}

// nodeOrder is one node's lock: opens share it, a release holds it alone.
type nodeOrder struct {
	sync.RWMutex
	users int // requests holding or waiting for it, guarded by ReleaseOrder.mu
}

// NewReleaseOrder orders the opens and releases raw serves.
func NewReleaseOrder(raw fuse.RawFileSystem) *ReleaseOrder {
	return &ReleaseOrder{RawFileSystem: raw, nodes: map[uint64]*nodeOrder{}}
}

// node returns node id's lock, counted until done.
func (o *ReleaseOrder) node(id uint64) (*nodeOrder, func()) {
	o.mu.Lock()
	n := o.nodes[id]
	if n == nil {
		n = &nodeOrder{}
		o.nodes[id] = n
	}
	n.users++
	o.mu.Unlock()
	return n, func() {
		o.mu.Lock()
		if n.users--; n.users == 0 {
			delete(o.nodes, id)
		}
		o.mu.Unlock()
	}
}

func (o *ReleaseOrder) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, done := o.node(in.NodeId)
	defer done()
	n.RLock()
	defer n.RUnlock()
	return o.RawFileSystem.Open(cancel, in, out)
}

func (o *ReleaseOrder) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	n, done := o.node(in.NodeId)
	defer done()
	n.Lock()
	defer n.Unlock()
	o.RawFileSystem.Release(cancel, in)
}
