package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/handlers"
	"github.com/notifybridge/notifybridge/internal/backoff"
	"github.com/notifybridge/notifybridge/transport/streams"
)

// warm fills the replay window before the node reports ready, retrying while
// Redis is unreachable.
func warm(ctx context.Context, hub *bridge.Hub, cfg *config.Config, log *zap.Logger) (bridge.ID, error) {
	retry := backoff.New(100*time.Millisecond, cfg.RedisRetryBackoff.Duration)
	for {
		newest, err := hub.Warm(ctx) // it logs what it warmed
		if err == nil {
			return newest, nil
		}
		if ctx.Err() != nil {
			return bridge.ID{}, ctx.Err()
		}
		log.Warn("warm start failed, retrying", zap.Error(err), zap.Duration("backoff", retry.Peek()))
		if !retry.Wait(ctx) {
			return bridge.ID{}, ctx.Err()
		}
	}
}

// ingest is the running router and its subscriber.
type ingest struct {
	router *message.Router
	sub    *streams.Subscriber
	sweep  *sweeper
	done   chan struct{}
}

// startIngest reads the stream through the node's consumer group into the
// hub. A missing group is created at the head the window warmed to, never at
// $, so nothing falls between warm start and ingest (contract §4); a group
// behind it is moved there (skipWarmed), warmBad being the entries warm start
// found undecodable.
func startIngest(ctx context.Context, rc *Redis, cfg *config.Config, hub *bridge.Hub, warmBad []handlers.BadEntry,
	ready *Readiness, tel *telemetry, log *zap.Logger) (*ingest, error) {
	dl, err := streams.NewDeadLetter(rc.Client, cfg.Stream, int64(cfg.DeadMaxlen.N))
	if err != nil {
		return nil, err
	}
	sweepRange, err := skipWarmed(ctx, rc, cfg, hub, warmBad, dl, tel.handlerHooks(), log.Named("ingest"))
	if err != nil {
		return nil, fmt.Errorf("moving the group past the warmed entries: %w", err)
	}
	sub, err := streams.NewSubscriber(rc.Client, streams.Config{
		Stream:          cfg.Stream,
		Group:           cfg.Group(),
		Consumer:        cfg.NodeID,
		BatchSize:       cfg.IngestBatch.N,
		Batched:         true, // a read batch crosses the Router as one message
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
	router, err := handlers.NewRouter(sub, handlers.IngestConfig{
		Stream:        cfg.Stream,
		Limits:        cfg.Limits(),
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
	in.sweep = startSweep(rc, cfg, sweepRange, dl, tel.handlerHooks(), log.Named("ingest"))
	// Set before the router can stop, so a stop is never overwritten; the
	// node is not ready before Run marks it started anyway.
	ready.setIngest(true)
	go func() {
		defer close(in.done)
		err := router.Run(context.WithoutCancel(ctx))
		// A router that stops while the node is not draining means nothing is
		// ingested any more: stop claiming readiness so traffic goes elsewhere.
		ready.setIngest(false)
		if !ready.isDraining() {
			log.Error("ingest router stopped: not ready", zap.Error(err))
		}
	}()
	select {
	case <-router.Running():
		log.Info("ingesting", zap.String("stream", cfg.Stream), zap.String("group", cfg.Group()), zap.String("consumer", cfg.NodeID))
		return in, nil
	case <-in.done:
		in.sweep.Close()
		_ = sub.Close()
		return nil, errors.New("ingest router stopped before it ran")
	case <-ctx.Done():
		in.Close(log)
		return nil, ctx.Err()
	}
}

// Close lets in-flight entries finish, flushes acknowledgements and waits.
func (in *ingest) Close(log *zap.Logger) {
	in.sweep.Close()
	if err := in.router.Close(); err != nil {
		log.Warn("ingest router close", zap.Error(err))
	}
	<-in.done
	if err := in.sub.Close(); err != nil {
		log.Warn("ingest subscriber close", zap.Error(err))
	}
}
