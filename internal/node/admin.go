package node

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/bridge"
)

// adminHandler serves admin_listen: /healthz (the process runs), /readyz
// (Readiness.Check, one line), /metrics, /v1/presence (all nodes' counts of
// one user or group), /debug/connections (this node's connections of one) and, with pprof on, /debug/pprof/.
func adminHandler(ready *Readiness, reg *prometheus.Registry, withPprof bool, rdb redis.UniversalClient, stream string, hub *bridge.Hub) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/presence", presenceHandler(rdb, stream))
	mux.Handle("GET /debug/connections", connectionsHandler(hub))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready.Check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			// One line whatever a wrapped error carries (the pool's).
			_, _ = w.Write([]byte(strings.ReplaceAll(err.Error(), "\n", " ") + "\n"))
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

// presenceHandler answers GET /v1/presence?user=42 or ?group=ops with
// {"user":"42","connections":N,"nodes":K} summed over the live nodes.
func presenceHandler(rdb redis.UniversalClient, stream string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		item, ok := queryItem(w, r)
		if !ok {
			return
		}
		q := r.URL.Query()
		conns, nodes, err := PresenceCount(r.Context(), rdb, stream, item)
		if err != nil {
			publishError(w, http.StatusServiceUnavailable, "redis did not answer: "+oneLineErr(err))
			return
		}
		ans := map[string]any{"connections": conns, "nodes": nodes}
		if u := q.Get("user"); u != "" {
			ans["user"] = u
		} else {
			ans["group"] = q.Get("group")
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
	})
}

// maxDebugConnections bounds GET /debug/connections: a group of 100k
// connections must not make a 100k-row answer.
const maxDebugConnections = 100

// connectionsHandler answers GET /debug/connections?user=42 or ?group=ops
// with this node's connections of that user or group (at most
// maxDebugConnections, and the total). Tokens never reach the core, so they
// cannot appear here.
func connectionsHandler(hub *bridge.Hub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		item, ok := queryItem(w, r)
		if !ok {
			return
		}
		kind, name := bridge.KindUser, strings.TrimPrefix(item, bridge.UserPrefix)
		if name == item {
			kind, name = bridge.KindGroup, strings.TrimPrefix(item, bridge.GroupPrefix)
		}
		infos, total := hub.Connections(kind, name, maxDebugConnections)
		if infos == nil {
			infos = []bridge.ConnInfo{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"of": item, "total": total, "shown": len(infos), "connections": infos})
	})
}

// queryItem reads ?user= or ?group= as a recipient item, answering 400 with
// the reason when it is not exactly one valid name.
func queryItem(w http.ResponseWriter, r *http.Request) (string, bool) {
	q := r.URL.Query()
	item, err := PresenceItem(q.Get("user"), q.Get("group"))
	if err != nil {
		publishError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return item, true
}
