package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readiness is the node's one answer to "may traffic come here?", used by
// /readyz and by the WebSocket handshake (503 while not ready).
type readiness struct {
	started  atomic.Bool // warm start done and ingest running
	redisOK  atomic.Bool // last Redis probe answered
	ingest   atomic.Bool // the ingest router runs
	draining atomic.Bool
}

var (
	errStarting     = errors.New("not ready: starting (warming the replay window)")
	errRedisDown    = errors.New("not ready: redis does not answer")
	errIngestDown   = errors.New("not ready: ingestion is not running")
	errDrainingNode = errors.New("not ready: draining, node shutting down")
)

// Check returns nil when ready, else a one-line reason.
func (r *readiness) Check() error {
	switch {
	case r.draining.Load():
		return errDrainingNode
	case !r.started.Load():
		return errStarting
	case !r.redisOK.Load():
		return errRedisDown
	case !r.ingest.Load():
		return errIngestDown
	}
	return nil
}

func adminHandler(ready *readiness, reg *prometheus.Registry, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready.Check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func startAdmin(addr string, h http.Handler) (*http.Server, net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return srv, l, nil
}
