// Package node owns one notifybridge process's parts: the Redis client, the
// replay window (bridge.Hub), ingest, the retention trimmer, the WebSocket
// pool, the admin server, the prober and readiness. New builds them, Run
// starts them in order until the node is ready, Shutdown stops them in
// reverse. Nothing under config/, transport/ or bridge/ imports it.
package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/demo"
	"github.com/notifybridge/notifybridge/handlers"
	"github.com/notifybridge/notifybridge/publisher"
	"github.com/notifybridge/notifybridge/transport/streams"
	"github.com/notifybridge/notifybridge/transport/wspool"
)

// Node is one bridge process. Call Run once, then Shutdown once Run has
// returned (whether it succeeded or not); both from the same goroutine.
type Node struct {
	cfg   *config.Config
	log   *zap.Logger
	ready Readiness

	// Built by New.
	redis   *Redis
	reg     *prometheus.Registry
	tel     *telemetry
	adminLn net.Listener
	admin   *http.Server
	hub     *bridge.Hub
	store   *handlers.Store
	pool    *wspool.Server

	// Started by Run; nil until then.
	ingest   *ingest
	trimmer  *streams.Trimmer
	prober   *prober
	presence *presencePublisher

	shutdown sync.Once
}

// New builds the node and binds its listeners (listen, admin_listen), so a
// port in use fails here; it starts no goroutine and sends nothing to Redis.
// version goes into the start log and notifybridge_build_info.
func New(cfg *config.Config, log *zap.Logger, version string) (_ *Node, err error) {
	log.Info("starting", zap.String("version", version), zap.String("stream", cfg.Stream),
		zap.String("group", cfg.Group()), zap.String("listen", cfg.Listen), zap.String("admin_listen", cfg.AdminListen),
		zap.String("auth", cfg.Auth), zap.String("replay_window", cfg.ReplayWindow.String()))
	if cfg.Auth == config.AuthNone {
		log.Warn("auth=none: identities are taken from ?user=&groups= without proof; for development and tests only")
	}
	n := &Node{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			n.release()
		}
	}()

	if n.redis, err = OpenRedis(cfg); err != nil {
		return nil, err
	}
	log.Info("redis", zap.String("redis_url", n.redis.URL), zap.Bool("embedded", n.redis.embedded != nil))
	n.tel = newTelemetry(n.reg, version, &n.ready, cfg.MaxConnections.N)

	if n.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		return nil, fmt.Errorf("admin_listen: %w", err)
	}
	n.admin = &http.Server{ReadHeaderTimeout: 5 * time.Second} // Handler once the hub exists
	log.Info("admin listening", zap.String("addr", n.adminLn.Addr().String()))

	n.store = handlers.NewStore(streams.NewReader(n.redis.Client, cfg.Stream), cfg.Limits())
	n.hub, err = bridge.NewHub(bridge.Config{
		WindowBytes:    cfg.ReplayWindow.Bytes,
		CursorInterval: cfg.CursorInterval.Duration,
		Logger:         log.Named("bridge"),
		Hooks:          n.tel.bridgeHooks(),
	}, n.store)
	if err != nil {
		return nil, err
	}
	n.admin.Handler = adminHandler(&n.ready, n.reg, cfg.Pprof.B, n.redis.Client, cfg.Stream, n.hub)
	auth, err := authenticator(cfg)
	if err != nil {
		return nil, err
	}
	auth = wspool.RevocableAuthenticator{Inner: auth, Check: revocationCheck(n.redis.Client, cfg.Stream, log.Named("auth"))}
	n.pool, err = wspool.New(wspool.Config{
		Listen:              cfg.Listen,
		AllowedOrigins:      cfg.Origins(),
		Auth:                auth,
		ValidateName:        bridge.ValidateName,
		MaxGroups:           cfg.MaxGroups.N,
		MaxConnections:      cfg.MaxConnections.N,
		MaxConnectionsPerIP: cfg.MaxConnectionsPerIP.N,
		MaxMessageBytes:     int(cfg.MaxMessageBytes.Bytes),
		HandshakeTimeout:    cfg.HandshakeTimeout.Duration,
		PingInterval:        cfg.PingInterval.Duration,
		WriteTimeout:        cfg.WriteTimeout.Duration,
		PollTimeout:         cfg.PollTimeout.Duration,
		Workers:             cfg.Workers.N,
		Ready:               n.ready.Check,
		Accept:              handlers.Accept(n.hub),
		Hooks:               n.tel,
		Logger:              log.Named("ws"),
		HTTPHandler:         pages(cfg, n.redis, auth, log),
	})
	if err != nil {
		return nil, err
	}
	n.ready.pool = n.pool
	return n, nil
}

// Run serves admin_listen and listen (not ready: 503), waits for Redis,
// warms the replay window, starts ingest, the trimmer and the prober, and
// marks the node ready. It returns then, or with why it could not get
// there; ctx cancelled before ready gives an error wrapping ctx.Err().
func (n *Node) Run(ctx context.Context) error {
	cfg, log := n.cfg, n.log
	go func() { _ = n.admin.Serve(n.adminLn) }()
	if err := n.pool.Start(); err != nil {
		return err
	}
	log.Info("websocket listening", zap.String("addr", n.pool.Addr().String()))
	if cfg.Demo.B {
		log.Info("demo page", zap.String("url", "http://"+demoHost(n.pool.Addr().String())+"/demo"))
	}

	if err := waitForRedis(ctx, n.redis.Client, cfg.RedisRetryBackoff.Duration, log); err != nil {
		return err
	}
	n.ready.setRedis(true)
	// The entries warm start reads are not read by ingest again, so their
	// dead letters come from here (skipWarmed).
	var warmBad []handlers.BadEntry
	n.store.ReportUndecodable(handlers.CollectUndecodable(&warmBad))
	newest, err := warm(ctx, n.hub, cfg, log)
	n.store.ReportUndecodable(nil)
	if err != nil {
		return err
	}
	if n.ingest, err = startIngest(ctx, n.redis, cfg, n.hub, warmBad, &n.ready, n.tel, log); err != nil {
		return err
	}
	if !cfg.Retention.Off() {
		n.trimmer, err = streams.NewTrimmer(n.redis.Client, streams.TrimmerConfig{Stream: cfg.Stream, MaxAge: cfg.Retention.MaxAge,
			MaxLen: cfg.Retention.MaxLen, Interval: cfg.RetentionInterval.Duration, Logger: log.Named("retention"), Hooks: n.tel.ingestHooks()})
		if err != nil {
			return err
		}
	}
	n.prober = startProber(n.redis.Client, &n.ready, n.tel, cfg, log)
	n.presence = startPresence(n.redis.Client, n.hub, cfg.Stream, cfg.NodeID, log.Named("presence"))
	n.ready.markStarted()
	log.Info("ready", zap.String("group", cfg.Group()), zap.String("warmed_to", newest.String()))
	return nil
}

// Shutdown drains a node that became ready: not ready at once, then
// shutdown_delay for load balancers to notice, then the pool's drain
// (close 1001 after what is ready is written), all within ctx. Then it
// stops ingest (in-flight entries finish, acks are flushed), the trimmer,
// the prober and the admin server, and closes the pool, the hub and Redis.
// A node that never became ready skips the delay and the drain. The error
// is the drain's, when ctx ended first; everything is stopped regardless.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.shutdown.Do(func() { err = n.stop(ctx) })
	return err
}

func (n *Node) stop(ctx context.Context) error {
	wasReady := n.ready.hasStarted()
	n.ready.drain()
	var drainErr error
	if wasReady {
		n.log.Info("shutting down", zap.Duration("shutdown_delay", n.cfg.ShutdownDelay.Duration), zap.Duration("shutdown_timeout", n.cfg.ShutdownTimeout.Duration))
		select {
		case <-time.After(n.cfg.ShutdownDelay.Duration):
		case <-ctx.Done():
		}
		if drainErr = n.pool.Drain(ctx); drainErr != nil {
			n.log.Warn("drain did not finish", zap.Error(drainErr))
		}
	}
	if n.ingest != nil {
		n.ingest.Close(n.log)
	}
	if n.trimmer != nil {
		_ = n.trimmer.Close()
	}
	if n.prober != nil {
		n.prober.Close()
	}
	if n.presence != nil {
		n.presence.Close(n.redis.Client, n.cfg.Stream, n.cfg.NodeID)
	}
	_ = n.admin.Shutdown(ctx)
	if wasReady {
		n.log.Info("stopped")
	} else {
		n.log.Info("stopped before ready")
	}
	n.release()
	return drainErr
}

// release closes what New built, in reverse; for New's failures and
// Shutdown's end.
func (n *Node) release() {
	if n.pool != nil {
		_ = n.pool.Close()
	}
	if n.hub != nil {
		n.hub.Close()
	}
	if n.adminLn != nil {
		_ = n.adminLn.Close() // Serve may never have run
	}
	if n.redis != nil {
		n.redis.Close()
	}
}

// Ready is the node's readiness: nil when ready, else a one-line reason.
func (n *Node) Ready() error { return n.ready.Check() }

// Addr is the WebSocket listener's address; AdminAddr admin_listen's.
func (n *Node) Addr() net.Addr      { return n.pool.Addr() }
func (n *Node) AdminAddr() net.Addr { return n.adminLn.Addr() }

// authenticator builds the identity check chosen by auth (contract §2).
func authenticator(cfg *config.Config) (wspool.Authenticator, error) {
	if cfg.Auth == config.AuthNone {
		return wspool.NewNoneAuthenticator(), nil
	}
	jc := wspool.JWTConfig{
		Secret:   []byte(cfg.JWTSecret),
		Audience: cfg.JWTAudience,
		Issuer:   cfg.JWTIssuer,
		Leeway:   cfg.JWTLeeway.Duration,
	}
	if cfg.JWTPublicKeyFile != "" {
		pem, err := wspool.LoadJWTPublicKeys(cfg.JWTPublicKeyFile)
		if err != nil {
			return nil, err
		}
		jc.PublicKeysPEM = pem
	}
	return wspool.NewJWTAuthenticator(jc)
}

// pages serves the plain HTTP paths that share the listen port with /ws:
// POST /v1/publish when publish_key is set, GET /v1/presence for callers
// with a token when presence_public is on, and the demo when demo is on.
func pages(cfg *config.Config, rc *Redis, auth wspool.Authenticator, log *zap.Logger) http.Handler {
	mux := http.NewServeMux()
	if cfg.PresencePublic.B {
		mux.Handle("GET /v1/presence", publicPresenceHandler(auth, rc.Client, cfg.Stream))
	}
	if cfg.PublishKey != "" {
		mux.Handle("POST /v1/publish", publishHandler(cfg.PublishKey, publisher.New(rc.Client, cfg.Stream, cfg.Limits()), cfg.Limits(), log.Named("publish")))
	}
	if cfg.Demo.B {
		h := demo.Handler(publisher.New(rc.Client, cfg.Stream, cfg.Limits()).Publish)
		mux.Handle("/demo", h)
		mux.Handle("/demo/", h)
	}
	return mux
}

func demoHost(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || host == "::" || host == "0.0.0.0" {
		return "localhost:" + port
	}
	return addr
}
