package writes

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count what the write path stages and settles: the difference is
// what writing behind has yet to do.
type Metrics struct {
	staged, settled atomic.Int64 // bytes
}

func newMetrics() *Metrics { return &Metrics{} }

// Collectors returns the metrics for a Prometheus registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	bytes := func(v *atomic.Int64) func() float64 { return func() float64 { return float64(v.Load()) } }
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ckptfs_staged_bytes_total",
			Help: "Bytes of files committed as staged files, to be chunked in the background."}, bytes(&m.staged)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ckptfs_settled_bytes_total",
			Help: "Bytes of staged files chunked and stored since."}, bytes(&m.settled)),
	}
}
