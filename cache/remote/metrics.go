package remote

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts the bucket traffic of a store in front of a bucket, in
// stored bytes.
type Metrics struct {
	fetchedBytes, uploadedBytes, evictedBytes prometheus.Counter
	fetchesInFlight                           prometheus.Gauge
}

// NewMetrics makes the counters, for a daemon to serve.
func NewMetrics() *Metrics {
	return &Metrics{
		fetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ckptfs_bucket_fetched_bytes_total",
			Help: "Chunk bytes fetched from the bucket because the local cache lacked them."}),
		uploadedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ckptfs_bucket_uploaded_bytes_total",
			Help: "Chunk bytes uploaded to the bucket."}),
		fetchesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ckptfs_bucket_fetches_in_flight",
			Help: "Chunk fetches from the bucket under way (readahead included)."}),
		evictedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ckptfs_cache_evicted_bytes_total",
			Help: "Pack bytes evicted from the local disk cache (their chunks are in the bucket)."}),
	}
}

// Collectors returns the metrics for a Prometheus registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.fetchedBytes, m.uploadedBytes, m.evictedBytes, m.fetchesInFlight}
}
