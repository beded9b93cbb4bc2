package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
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

// serve runs one node: Redis, warm start, ingest router, WebSocket pool and
// admin server, until SIGTERM/SIGINT; then it drains within shutdown_timeout.
func serve(args []string, stderr io.Writer) error {
	cfg, _, err := config.Load("notifybridge serve", args, stderr, nil)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	log.Info("starting", zap.String("version", version), zap.String("stream", cfg.Stream),
		zap.String("group", cfg.Group()), zap.String("listen", cfg.Listen), zap.String("admin_listen", cfg.AdminListen),
		zap.String("auth", cfg.Auth), zap.String("replay_window", cfg.ReplayWindow.String()))
	if cfg.Auth == config.AuthNone {
		log.Warn("auth=none: identities are taken from ?user=&groups= without proof; for development and tests only")
	}

	rc, err := openRedis(cfg)
	if err != nil {
		return err
	}
	defer rc.Close()
	log.Info("redis", zap.String("redis_url", rc.URL), zap.Bool("embedded", rc.embedded != nil))

	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	reg := prometheus.NewRegistry()
	tel := newTelemetry(reg, version)
	tel.maxConnections.Set(float64(cfg.MaxConnections.N))
	ready := &readiness{}
	admin, adminLn, err := startAdmin(cfg.AdminListen, adminHandler(ready, reg, cfg.Pprof.B))
	if err != nil {
		return fmt.Errorf("admin_listen: %w", err)
	}
	log.Info("admin listening", zap.String("addr", adminLn.Addr().String()))

	lim := limits(cfg)
	store := handlers.NewStore(streams.NewReader(rc.Client, cfg.Stream), lim)
	hub, err := bridge.NewHub(bridge.Config{
		WindowBytes:    cfg.ReplayWindow.Bytes,
		CursorInterval: cfg.CursorInterval.Duration,
		Logger:         log.Named("bridge"),
		Hooks:          tel.bridgeHooks(),
	}, store)
	if err != nil {
		return err
	}
	defer hub.Close()

	auth, err := authenticator(cfg)
	if err != nil {
		return err
	}
	pool, err := wspool.New(wspool.Config{
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
		Workers:             cfg.Workers.N,
		Ready:               ready.Check,
		Accept:              handlers.Accept(hub),
		Hooks:               tel,
		Logger:              log.Named("ws"),
		HTTPHandler:         pages(cfg, rc),
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Start(); err != nil {
		return err
	}
	log.Info("websocket listening", zap.String("addr", pool.Addr().String()))
	if cfg.Demo.B {
		log.Info("demo page", zap.String("url", "http://"+demoHost(pool.Addr().String())+"/demo"))
	}

	if err := waitForRedis(ctx, rc.Client, cfg.RedisRetryBackoff.Duration, log); err != nil {
		return shutdownBeforeReady(err, log)
	}
	ready.redisOK.Store(true)

	newest, err := warm(ctx, hub, cfg, log)
	if err != nil {
		return shutdownBeforeReady(err, log)
	}

	ingest, err := startIngest(ctx, rc, cfg, hub, ready, tel, log)
	if err != nil {
		return err
	}
	ready.ingest.Store(true)
	ready.started.Store(true)

	var trimmer *streams.Trimmer
	if !cfg.Retention.Off() {
		trimmer, err = streams.NewTrimmer(rc.Client, streams.TrimmerConfig{Stream: cfg.Stream, MaxAge: cfg.Retention.MaxAge,
			MaxLen: cfg.Retention.MaxLen, Interval: cfg.RetentionInterval.Duration, Logger: log.Named("retention"), Hooks: tel.ingestHooks()})
		if err != nil {
			return err
		}
	}
	prober := startProber(rc.Client, ready, tel, cfg, log)
	log.Info("ready", zap.String("group", cfg.Group()), zap.String("warmed_to", newest.String()))

	<-ctx.Done()
	stopSignals()
	// A second signal exits at once.
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-again
		log.Warn("second signal: exiting now")
		os.Exit(1)
	}()

	ready.draining.Store(true)
	log.Info("shutting down", zap.Duration("shutdown_delay", cfg.ShutdownDelay.Duration), zap.Duration("shutdown_timeout", cfg.ShutdownTimeout.Duration))
	deadline, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	select {
	case <-time.After(cfg.ShutdownDelay.Duration):
	case <-deadline.Done():
	}
	if err := pool.Drain(deadline); err != nil {
		log.Warn("drain did not finish", zap.Error(err))
	}
	ingest.Close(log)
	if trimmer != nil {
		_ = trimmer.Close()
	}
	prober.Close()
	_ = admin.Shutdown(deadline)
	log.Info("stopped")
	return nil
}

func shutdownBeforeReady(err error, log *zap.Logger) error {
	if errors.Is(err, context.Canceled) {
		log.Info("stopped before ready")
		return nil
	}
	return err
}

// warm fills the replay window before the node reports ready, retrying while
// Redis is unreachable.
func warm(ctx context.Context, hub *bridge.Hub, cfg *config.Config, log *zap.Logger) (bridge.ID, error) {
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		newest, err := hub.Warm(ctx)
		if err == nil {
			log.Info("replay window warmed", zap.String("newest", newest.String()), zap.Duration("took", time.Since(start)))
			return newest, nil
		}
		if ctx.Err() != nil {
			return bridge.ID{}, ctx.Err()
		}
		log.Warn("warm start failed, retrying", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return bridge.ID{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, cfg.RedisRetryBackoff.Duration)
	}
}

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

// ingest is the running router and its subscriber.
type ingest struct {
	router *message.Router
	sub    *streams.Subscriber
	done   chan struct{}
}

// startIngest reads the stream through the node's consumer group into the
// hub. A missing group is created at the head the window warmed to, never at
// $, so nothing falls between warm start and ingest (contract §4).
func startIngest(ctx context.Context, rc *redisConn, cfg *config.Config, hub *bridge.Hub, ready *readiness,
	tel *telemetry, log *zap.Logger) (*ingest, error) {
	sub, err := streams.NewSubscriber(rc.Client, streams.Config{
		Stream:          cfg.Stream,
		Group:           cfg.Group(),
		Consumer:        cfg.NodeID,
		BatchSize:       cfg.IngestBatch.N,
		Block:           cfg.IngestBlock.Duration,
		AckBatch:        cfg.IngestBatch.N,
		AckInterval:     cfg.AckInterval.Duration,
		RetryBackoffMax: cfg.RedisRetryBackoff.Duration,
		CloseTimeout:    cfg.ShutdownTimeout.Duration,
		// The group is created at the window's head: right after warm start
		// that is the newest warmed id; after Redis lost the group it is where
		// the window ends, so nothing after it is skipped.
		StartID:          func(context.Context) (string, error) { return hub.Head().String(), nil },
		OnGroupRecreated: func() { hub.GroupRecreated() },
		Logger:           log.Named("ingest"),
		Hooks:            tel.ingestHooks(),
	})
	if err != nil {
		return nil, err
	}
	dl, err := streams.NewDeadLetter(rc.Client, cfg.Stream, int64(cfg.DeadMaxlen.N))
	if err != nil {
		return nil, err
	}
	router, err := handlers.NewRouter(sub, handlers.IngestConfig{
		Stream:        cfg.Stream,
		Limits:        limits(cfg),
		Appender:      hub,
		DeadLetter:    dl,
		RetryAttempts: cfg.HandlerRetries.N,
		CloseTimeout:  cfg.ShutdownTimeout.Duration,
		Logger:        log.Named("ingest"),
		Hooks:         tel.handlerHooks(),
	})
	if err != nil {
		_ = sub.Close()
		return nil, err
	}
	in := &ingest{router: router, sub: sub, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		err := router.Run(context.WithoutCancel(ctx))
		// A router that stops while the node is not draining means nothing is
		// ingested any more: stop claiming readiness so traffic goes elsewhere.
		ready.ingest.Store(false)
		if !ready.draining.Load() {
			log.Error("ingest router stopped: not ready", zap.Error(err))
		}
	}()
	select {
	case <-router.Running():
		log.Info("ingesting", zap.String("stream", cfg.Stream), zap.String("group", cfg.Group()), zap.String("consumer", cfg.NodeID))
		return in, nil
	case <-in.done:
		_ = sub.Close()
		return nil, errors.New("ingest router stopped before it ran")
	case <-ctx.Done():
		in.Close(log)
		return nil, ctx.Err()
	}
}

// Close lets in-flight entries finish, flushes acknowledgements and waits.
func (in *ingest) Close(log *zap.Logger) {
	if err := in.router.Close(); err != nil {
		log.Warn("ingest router close", zap.Error(err))
	}
	<-in.done
	if err := in.sub.Close(); err != nil {
		log.Warn("ingest subscriber close", zap.Error(err))
	}
}

// pages serves the plain HTTP paths that share the listen port with /ws:
// the demo, when the demo setting is on.
func pages(cfg *config.Config, rc *redisConn) http.Handler {
	mux := http.NewServeMux()
	if cfg.Demo.B {
		h := demo.Handler(publisher.New(rc.Client, cfg.Stream, limits(cfg)).Publish)
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
