package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveMetrics serves /metrics from collectors on addr, and with withPprof
// net/http/pprof under /debug/pprof/, until the returned stop is called.
// Listening happens here, so a taken address fails the mount.
func serveMetrics(addr string, withPprof bool, log *slog.Logger, collectors ...[]prometheus.Collector) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(goCollectors()...)
	for _, cs := range collectors {
		reg.MustRegister(cs...)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics", "pprof", withPprof)
	if warning := exposureWarning(addr, withPprof); warning != "" {
		log.Warn(warning)
	}
	return func() { srv.Close() }, nil
}

// exposureWarning says what serving on addr exposes, when addr is not a
// loopback address: metrics name checkpoints, and pprof hands out heap
// profiles (names, paths) and CPU time to anyone who can reach it.
func exposureWarning(addr string, withPprof bool) string {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err == nil && (host == "localhost" || ip != nil && ip.IsLoopback()) {
		return ""
	}
	what := "metrics"
	if withPprof {
		what = "metrics and pprof (heap profiles, CPU profiles on demand)"
	}
	return fmt.Sprintf("--metrics-addr %s serves %s to other machines, without authentication; use 127.0.0.1 unless that is meant", addr, what)
}

// goCollectors are the runtime and process metrics every Go service shows.
func goCollectors() []prometheus.Collector {
	return []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
}
