package node

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/notifybridge/notifybridge/transport/wspool"
)

type fakePool struct{ err error }

func (p *fakePool) Err() error { return p.err }

// Each state gives its own one-line reason, in a fixed order: draining,
// then a failed pool (it does not recover), then starting, Redis, ingest.
func TestReadinessReasons(t *testing.T) {
	poolErr := fmt.Errorf("%w: epoll_wait: bad file descriptor", wspool.ErrPollerStopped)
	for _, tc := range []struct {
		name                             string
		started, redis, ingest, draining bool
		pool                             error
		want                             string // "" when ready
	}{
		{name: "new", want: "not ready: starting (warming the replay window)"},
		{name: "redis up, warming", redis: true, want: "not ready: starting"},
		{name: "ready", started: true, redis: true, ingest: true},
		{name: "redis down", started: true, ingest: true, want: "not ready: redis does not answer"},
		{name: "ingest stopped", started: true, redis: true, want: "not ready: ingestion is not running"},
		{name: "redis before ingest", started: true, want: "not ready: redis does not answer"},
		{name: "draining", started: true, redis: true, ingest: true, draining: true, want: "not ready: draining, node shutting down"},
		{name: "pool failed", started: true, redis: true, ingest: true, pool: poolErr,
			want: "not ready: websocket pool failed: poller stopped: epoll_wait: bad file descriptor"},
		{name: "pool failed while starting", pool: poolErr, want: "not ready: websocket pool failed: poller stopped"},
		{name: "draining over pool failed", started: true, draining: true, pool: poolErr, want: "not ready: draining"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Readiness{pool: &fakePool{tc.pool}}
			if tc.started {
				r.markStarted()
			}
			r.setRedis(tc.redis)
			r.setIngest(tc.ingest)
			if tc.draining {
				r.drain()
			}
			err := r.Check()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want ready", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Check = %v, want one line starting %q", err, tc.want)
			}
			if tc.pool != nil && !tc.draining && !errors.Is(err, wspool.ErrPollerStopped) {
				t.Errorf("%v does not wrap wspool.ErrPollerStopped", err)
			}
		})
	}
	// Without a pool (before New set it) the other reasons still hold.
	if err := (&Readiness{}).Check(); !errors.Is(err, errStarting) {
		t.Errorf("no pool: %v, want %v", err, errStarting)
	}
}

func TestReadinessSetRedisReportsChanges(t *testing.T) {
	var r Readiness
	if r.setRedis(false) {
		t.Error("false → false is no change")
	}
	if !r.setRedis(true) || r.setRedis(true) {
		t.Error("false → true is one change")
	}
	if !r.setRedis(false) {
		t.Error("true → false is a change")
	}
}
