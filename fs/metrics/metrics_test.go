package metrics

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The wrapper counts each request that does the work once, a write served
// by Write after Writev answered ENOSYS once, and none stays in flight.
func TestCountedRequests(t *testing.T) {
	m := New()
	fs := m.Counted(fuse.NewDefaultRawFileSystem())
	fs.Lookup(nil, &fuse.InHeader{}, "x", &fuse.EntryOut{})
	fs.Lookup(nil, &fuse.InHeader{}, "y", &fuse.EntryOut{})
	fs.Writev(nil, &fuse.WriteIn{}, [][]byte{[]byte("a")}) // ENOSYS: not counted
	fs.Write(nil, &fuse.WriteIn{}, []byte("a"))
	for op, want := range map[string]float64{"lookup": 2, "write": 1, "open": 0} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(op)); got != want {
			t.Errorf("%s: counted %v, want %v", op, got, want)
		}
	}
	if got := testutil.ToFloat64(m.inFlight); got != 0 {
		t.Errorf("%v requests left in flight", got)
	}
	m.Reads(AsWritten).Add(3)
	if got := testutil.ToFloat64(m.Reads(AsWritten)); got != 3 {
		t.Errorf("read bytes %v", got)
	}
}
