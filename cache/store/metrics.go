package store

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what a store does. Every store has one; a daemon hands
// Collectors to the registry it serves.
type Metrics struct {
	cacheHits, cacheMisses prometheus.Counter
	loadedBytes            prometheus.Counter
	decodeSeconds          prometheus.Histogram
	storeSeconds           prometheus.Histogram
	// Ingested bytes: all of them, those of new chunks, and those new
	// chunks compressed. Plain atomics, so the ratios can be computed.
	logical, unique, stored atomic.Int64
}

func newMetrics() *Metrics {
	latency := prometheus.ExponentialBuckets(50e-6, 2, 14) // 50 µs to 0.4 s
	return &Metrics{
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "ckptfs_chunk_cache_hits_total",
			Help: "Chunk lookups served from the decoded-chunk cache."}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "ckptfs_chunk_cache_misses_total",
			Help: "Chunk lookups that read and decoded the chunk from its pack (readahead included)."}),
		loadedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ckptfs_chunk_cache_loaded_bytes_total",
			Help: "Bytes of the chunks the misses loaded: against the bytes read, what a read pattern costs in decoding."}),
		decodeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ckptfs_chunk_decode_seconds",
			Help: "Time to read a chunk from its pack, decode it and verify its hash.", Buckets: latency}),
		storeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ckptfs_chunk_store_seconds",
			Help: "Time to compress a new chunk and append it to a pack.", Buckets: latency}),
	}
}

// Collectors returns the store's metrics for a Prometheus registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	bytes := func(v *atomic.Int64) func() float64 { return func() float64 { return float64(v.Load()) } }
	ratio := func(a, b *atomic.Int64) func() float64 {
		return func() float64 {
			if d := b.Load(); d > 0 {
				return float64(a.Load()) / float64(d)
			}
			return 1
		}
	}
	return []prometheus.Collector{
		m.cacheHits, m.cacheMisses, m.loadedBytes, m.decodeSeconds, m.storeSeconds,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ckptfs_ingest_logical_bytes_total",
			Help: "Bytes written into the store, before deduplication."}, bytes(&m.logical)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ckptfs_ingest_unique_bytes_total",
			Help: "Bytes of new chunks: what deduplication left to store."}, bytes(&m.unique)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ckptfs_ingest_stored_bytes_total",
			Help: "Bytes of new chunks compressed, as appended to packs."}, bytes(&m.stored)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ckptfs_dedup_ratio",
			Help: "Unique / logical bytes ingested since the store was opened (1 before any)."}, ratio(&m.unique, &m.logical)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ckptfs_compression_ratio",
			Help: "Stored / unique bytes ingested since the store was opened (1 before any)."}, ratio(&m.stored, &m.unique)),
	}
}

// since observes the seconds from start on h.
func since(h prometheus.Histogram, start time.Time) { h.Observe(time.Since(start).Seconds()) }
