package node

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Readiness is the node's one answer to "may traffic come here?": /readyz,
// the WebSocket handshake (503 while not ready) and the notifybridge_ready
// gauge all ask Check. Only the node writes it, through the unexported
// methods below: Run marks Redis up, ingest running and started; the
// prober keeps redis current; the ingest goroutine clears ingest when the
// router stops; Shutdown sets draining.
type Readiness struct {
	started  atomic.Bool // Run finished: window warm, ingest running
	redisOK  atomic.Bool // Redis answers (within readiness_grace)
	ingest   atomic.Bool // the ingest router runs
	draining atomic.Bool // Shutdown began
	// pool reports the WebSocket pool's failure (wspool.Server.Err); set
	// once, before the pool starts.
	pool interface{ Err() error }
}

var (
	errStarting     = errors.New("not ready: starting (warming the replay window)")
	errRedisDown    = errors.New("not ready: redis does not answer")
	errIngestDown   = errors.New("not ready: ingestion is not running")
	errDrainingNode = errors.New("not ready: draining, node shutting down")
)

// Check returns nil when ready, else a one-line reason. A failed pool comes
// before starting, Redis and ingest: it does not recover, so it is the
// reason worth reading.
func (r *Readiness) Check() error {
	if r.draining.Load() {
		return errDrainingNode
	}
	if r.pool != nil {
		if err := r.pool.Err(); err != nil {
			return fmt.Errorf("not ready: websocket pool failed: %w", err)
		}
	}
	switch {
	case !r.started.Load():
		return errStarting
	case !r.redisOK.Load():
		return errRedisDown
	case !r.ingest.Load():
		return errIngestDown
	}
	return nil
}

// setRedis records whether Redis answers and reports whether that changed.
func (r *Readiness) setRedis(ok bool) (changed bool) { return r.redisOK.Swap(ok) != ok }

// setIngest records whether the ingest router runs.
func (r *Readiness) setIngest(running bool) { r.ingest.Store(running) }

// markStarted is Run's last step.
func (r *Readiness) markStarted() { r.started.Store(true) }

func (r *Readiness) hasStarted() bool { return r.started.Load() }

// drain is Shutdown's first step: from here on the node is never ready.
func (r *Readiness) drain() { r.draining.Store(true) }

func (r *Readiness) isDraining() bool { return r.draining.Load() }
