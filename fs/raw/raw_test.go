package raw

import (
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// served is a raw file system that records what reaches it; a release
// of node 1 waits for release to close.
type served struct {
	fuse.RawFileSystem
	mu       sync.Mutex
	calls    []string
	released chan struct{} // closed by the test to end a release of node 1
	mode     uint32        // of every node, as GetAttr reports it
}

func newServed() *served {
	return &served{RawFileSystem: fuse.NewDefaultRawFileSystem(), released: make(chan struct{})}
}

func (s *served) record(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
}

func (s *served) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func (s *served) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	s.record("open")
	return fuse.OK
}

func (s *served) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	s.record("release started")
	if in.NodeId == 1 {
		<-s.released
	}
	s.record("release done")
}

func (s *served) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	out.Ino, out.Mode = 1000+in.NodeId, s.mode
	return fuse.OK
}

func (s *served) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	s.record("write")
	return uint32(len(data)), fuse.OK
}

// An open of a node waits for its release under way, so it is never handed
// the backing file that release closes; another node's open does not.
func TestReleaseOrderKeepsOpensOutOfARelease(t *testing.T) {
	s := newServed()
	o := NewReleaseOrder(s)
	releaseDone := make(chan struct{})
	go func() {
		o.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: 1}})
		close(releaseDone)
	}()
	for len(s.seen()) == 0 {
		time.Sleep(time.Millisecond)
	}
	opened := make(chan struct{})
	go func() {
		o.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: 1}}, &fuse.OpenOut{})
		close(opened)
	}()
	o.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: 2}}, &fuse.OpenOut{}) // not held
	select {
	case <-opened:
		t.Fatal("an open went through a release of its node under way")
	case <-time.After(50 * time.Millisecond):
	}
	close(s.released)
	<-opened
	<-releaseDone
	want := []string{"release started", "open", "release done", "open"}
	if got := s.seen(); !slices.Equal(got, want) {
		t.Fatalf("served %v, want %v", got, want)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.nodes) != 0 {
		t.Fatalf("%d node locks kept after their requests", len(o.nodes))
	}
}

// A request the kernel flags drops the set-ID bits of its node before it
// is served, and the kernel's attributes of it; an unflagged one, a node
// without the bits, or a failed drop do not.
func TestPrivDropperDropsFlaggedRequests(t *testing.T) {
	s := newServed()
	var dropped []uint64
	dropErr := syscall.Errno(0)
	p := NewPrivDropper(s, func(ino uint64, caller *fuse.Caller) syscall.Errno {
		if caller.Uid != 1000 {
			t.Errorf("dropped for uid %d", caller.Uid)
		}
		dropped = append(dropped, ino)
		return dropErr
	})
	var stale []uint64
	p.stale = func(node uint64) { stale = append(stale, node) }
	write := func(flags uint32) fuse.Status {
		in := &fuse.WriteIn{InHeader: fuse.InHeader{NodeId: 7, Caller: fuse.Caller{Owner: fuse.Owner{Uid: 1000}}}, WriteFlags: flags}
		_, st := p.Write(nil, in, []byte("x"))
		return st
	}
	open := func(flags uint32) fuse.Status {
		in := &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: 8, Caller: fuse.Caller{Owner: fuse.Owner{Uid: 1000}}}, Mode: flags}
		return p.Open(nil, in, &fuse.OpenOut{})
	}

	s.mode = syscall.S_IFREG | 0o4755
	if write(0) != fuse.OK || len(dropped) != 0 {
		t.Fatalf("an unflagged write dropped bits: %v", dropped)
	}
	if write(fuse.WRITE_KILL_SUIDGID) != fuse.OK || open(fuse.OPEN_KILL_SUIDGID) != fuse.OK {
		t.Fatal("flagged requests failed")
	}
	if len(dropped) != 2 || dropped[0] != 1007 || dropped[1] != 1008 || len(stale) != 2 || stale[0] != 7 || stale[1] != 8 {
		t.Fatalf("dropped %v, attributes dropped of %v; want inodes 1007 1008, nodes 7 8", dropped, stale)
	}
	dropErr = syscall.EROFS
	if st := write(fuse.WRITE_KILL_SUIDGID); st != fuse.Status(syscall.EROFS) {
		t.Fatalf("a write whose drop failed answered %v", st)
	}
	if n := len(s.seen()); n != 3 {
		t.Fatalf("%d requests served, want the 3 whose drop did not fail", n)
	}
	s.mode = syscall.S_IFREG | 0o755
	dropped = nil
	if write(fuse.WRITE_KILL_SUIDGID) != fuse.OK || len(dropped) != 0 {
		t.Fatalf("a file without set-ID bits had them dropped: %v", dropped)
	}
}
