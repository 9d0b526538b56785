// Package metrics counts what a mount serves: bytes read by kind of view
// and written, and the FUSE requests that do the work, counted by a
// wrapper of the raw file system while they run.
package metrics

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what a mount serves.
type Metrics struct {
	readBytes    *prometheus.CounterVec // by view kind
	writtenBytes prometheus.Counter
	requests     *prometheus.CounterVec // by operation
	inFlight     prometheus.Gauge
}

// The view kinds that label read bytes.
const (
	AsWritten = "as_written"
	Single    = "single"
	Shards    = "shards"
)

// New makes a mount's metrics; Collectors registers them.
func New() *Metrics {
	return &Metrics{
		readBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ckptfs_read_bytes_total",
			Help: "Bytes the daemon returned to reads, by view: as_written, single, shards. Reads of hot copies go kernel-direct and are not seen."},
			[]string{"view"}),
		writtenBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ckptfs_written_bytes_total",
			Help: "Bytes written to files as written; a file the kernel writes on its backing file counts what it grew by at each commit."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ckptfs_fuse_requests_total",
			Help: "FUSE requests that do the work (lookup, open, create, read, write, flush, fsync, release, readdirplus, getattr, setattr, getxattr), by operation."},
			[]string{"op"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ckptfs_fuse_requests_in_flight",
			Help: "Those FUSE requests being served now."}),
	}
}

// Collectors returns the mount's metrics for a Prometheus registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.readBytes, m.writtenBytes, m.requests, m.inFlight}
}

// Reads counts the bytes read of a view kind.
func (m *Metrics) Reads(kind string) prometheus.Counter { return m.readBytes.WithLabelValues(kind) }

// Written counts the bytes written.
func (m *Metrics) Written() prometheus.Counter { return m.writtenBytes }

// Counted wraps raw to count its requests into m.
func (m *Metrics) Counted(raw fuse.RawFileSystem) fuse.RawFileSystem {
	return &countedFS{RawFileSystem: raw, m: m}
}

// countedFS wraps the node tree's raw filesystem to count the requests
// that do the work while they run.
type countedFS struct {
	fuse.RawFileSystem
	m *Metrics
}

// track counts one request of op and returns the function that ends it.
func (f *countedFS) track(op string) func() {
	f.m.requests.WithLabelValues(op).Inc()
	f.m.inFlight.Inc()
	return f.m.inFlight.Dec
}

func (f *countedFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer f.track("lookup")()
	return f.RawFileSystem.Lookup(cancel, h, name, out)
}

func (f *countedFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer f.track("open")()
	return f.RawFileSystem.Open(cancel, in, out)
}

func (f *countedFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer f.track("create")()
	return f.RawFileSystem.Create(cancel, in, name, out)
}

func (f *countedFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer f.track("read")()
	return f.RawFileSystem.Read(cancel, in, buf)
}

// Writev serves WRITE; the server falls back to Write on ENOSYS, which is
// then the request counted.
func (f *countedFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	f.m.inFlight.Inc()
	n, status := f.RawFileSystem.Writev(cancel, in, data)
	f.m.inFlight.Dec()
	if status != fuse.ENOSYS {
		f.m.requests.WithLabelValues("write").Inc()
	}
	return n, status
}

func (f *countedFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer f.track("write")()
	return f.RawFileSystem.Write(cancel, in, data)
}

func (f *countedFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	defer f.track("flush")()
	return f.RawFileSystem.Flush(cancel, in)
}

func (f *countedFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer f.track("fsync")()
	return f.RawFileSystem.Fsync(cancel, in)
}

func (f *countedFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	defer f.track("release")()
	f.RawFileSystem.Release(cancel, in)
}

func (f *countedFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer f.track("readdirplus")()
	return f.RawFileSystem.ReadDirPlus(cancel, in, out)
}

// GetXAttr counts the kernel's own questions too: before a write it asks
// for security.capability unless the mount handles privilege removal.
func (f *countedFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	defer f.track("getxattr")()
	return f.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (f *countedFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer f.track("getattr")()
	return f.RawFileSystem.GetAttr(cancel, in, out)
}

func (f *countedFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer f.track("setattr")()
	return f.RawFileSystem.SetAttr(cancel, in, out)
}
