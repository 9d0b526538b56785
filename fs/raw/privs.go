package raw

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// PrivDropper sees the flags the node API does not pass on (a write's and
// an open's) and has the file's set-ID bits dropped before the request is
// served (FUSE_HANDLE_KILLPRIV_V2). A truncate's and a chown's reach the
// node's setattr.
type PrivDropper struct {
	fuse.RawFileSystem
	// drop drops the set-ID bits of inode ino for caller.
	drop func(ino uint64, caller *fuse.Caller) syscall.Errno
	// stale drops the kernel's attributes of a node; set by Init, before
	// the first request.
	stale func(node uint64)
}

// NewPrivDropper drops bits through drop before raw serves a request
// flagged to.
func NewPrivDropper(raw fuse.RawFileSystem, drop func(ino uint64, caller *fuse.Caller) syscall.Errno) *PrivDropper {
	return &PrivDropper{RawFileSystem: raw, drop: drop}
}

func (p *PrivDropper) Init(server *fuse.Server) {
	// The attributes only, which takes no lock the request holds.
	p.stale = func(node uint64) { server.InodeNotify(node, -1, 0) }
	p.RawFileSystem.Init(server)
}

// dropFor drops the privileges of the node a request is for.
func (p *PrivDropper) dropFor(cancel <-chan struct{}, h *fuse.InHeader) fuse.Status {
	var out fuse.AttrOut // the node's inode number, as Getattr reports it
	if st := p.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: *h}, &out); !st.Ok() {
		return st
	}
	if out.Mode&(syscall.S_ISUID|syscall.S_ISGID) == 0 {
		return fuse.OK
	}
	if errno := p.drop(out.Ino, &h.Caller); errno != 0 {
		return fuse.Status(errno)
	}
	// No reply to an OPEN or a WRITE carries the new mode, and the kernel
	// keeps the old one for the attribute timeout: it drops it now.
	p.stale(h.NodeId)
	return fuse.OK
}

func (p *PrivDropper) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		if st := p.dropFor(cancel, &in.InHeader); !st.Ok() {
			return st
		}
	}
	return p.RawFileSystem.Open(cancel, in, out)
}

func (p *PrivDropper) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := p.dropFor(cancel, &in.InHeader); !st.Ok() {
			return 0, st
		}
	}
	return p.RawFileSystem.Write(cancel, in, data)
}

func (p *PrivDropper) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := p.dropFor(cancel, &in.InHeader); !st.Ok() {
			return 0, st
		}
	}
	return p.RawFileSystem.Writev(cancel, in, data)
}
