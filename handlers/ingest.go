package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/backoff"
	"github.com/notifybridge/notifybridge/transport/streams"
	"go.uber.org/zap"
)

// Appender takes decoded events into the core. Append returns false when the
// core already held the event's id (a redelivery); either way the entry is
// then acknowledged.
type Appender interface {
	Append(ev *bridge.Event) bool
}

// NopAppender drops every event: for benchmarks of ingest alone.
type NopAppender struct{}

// Append drops ev.
func (NopAppender) Append(*bridge.Event) bool { return true }

// DeadLetterWriter stores an undeliverable entry; *streams.DeadLetter is one.
type DeadLetterWriter interface {
	Write(ctx context.Context, id string, fields map[string]string, reason string) (string, error)
}

// Hooks receive ingest metrics; they must be cheap and safe for concurrent use.
type Hooks interface {
	// Redelivered is called per event the core already held (a redelivery,
	// or the overlap of warm start and the group's backlog); the core counts
	// the events it appends itself (bridge.Hooks.Appended).
	Redelivered()
	// Retried is called before each in-place retry of a failing handler.
	Retried()
	// DeadLettered is called per entry written to the dead-letter stream;
	// bad says it did not decode (else the handler kept failing).
	DeadLettered(bad bool)
	// DeadLetterFailed is called when writing a dead letter failed (the entry
	// is nacked and comes again).
	DeadLetterFailed()
}

// NopHooks ignores everything.
type NopHooks struct{}

func (NopHooks) Redelivered()      {}
func (NopHooks) Retried()          {}
func (NopHooks) DeadLettered(bool) {}
func (NopHooks) DeadLetterFailed() {}

// IngestConfig configures the ingest router.
type IngestConfig struct {
	// Stream is the topic the Subscriber reads (the stream key).
	Stream string
	Limits bridge.Limits
	// Appender is the core's window. Nil means NopAppender.
	Appender Appender
	// DeadLetter receives entries that cannot be delivered. Required.
	DeadLetter DeadLetterWriter
	// RetryAttempts is how often a failing handler runs in all before the
	// entry is dead-lettered (decode failures are never retried). Default 5.
	RetryAttempts int
	// RetryInitial is the first pause between attempts; it doubles up to
	// RetryMax. Defaults 50ms and 2s.
	RetryInitial time.Duration
	RetryMax     time.Duration
	// CloseTimeout bounds how long Router.Close waits for in-flight handlers.
	// Default 10s (shutdown_timeout).
	CloseTimeout time.Duration
	Logger       *zap.Logger
	Hooks        Hooks
}

func (c *IngestConfig) setDefaults() {
	if c.Limits == (bridge.Limits{}) {
		c.Limits = bridge.DefaultLimits
	}
	if c.Appender == nil {
		c.Appender = NopAppender{}
	}
	if c.RetryAttempts == 0 {
		c.RetryAttempts = 5
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = 50 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 2 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Hooks == nil {
		c.Hooks = NopHooks{}
	}
}

// Validate reports every bad setting, named as in the configuration.
func (c *IngestConfig) Validate() error {
	var errs []error
	if c.Stream == "" {
		errs = append(errs, errors.New("stream: must not be empty"))
	}
	if c.DeadLetter == nil {
		errs = append(errs, errors.New("dead letter writer: must be set"))
	}
	if c.Limits.MaxEventBytes <= 0 {
		errs = append(errs, fmt.Errorf("max_event_bytes: must be > 0, got %d", c.Limits.MaxEventBytes))
	}
	if c.Limits.MaxRecipients <= 0 {
		errs = append(errs, fmt.Errorf("max_recipients: must be > 0, got %d", c.Limits.MaxRecipients))
	}
	if c.RetryAttempts <= 0 {
		errs = append(errs, fmt.Errorf("ingest_retry_attempts: must be > 0, got %d", c.RetryAttempts))
	}
	if c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial {
		errs = append(errs, fmt.Errorf("ingest_retry_backoff: want 0 < initial (%v) <= max (%v)", c.RetryInitial, c.RetryMax))
	}
	return errors.Join(errs...)
}

// HandlerName is the name of the ingest handler in the router.
const HandlerName = "ingest"

// NewRouter builds the ingest router: sub's messages (a stream entry each,
// or a read batch of them from a batched streams.Subscriber) go through
// middleware.Recoverer to the handler, which takes each entry, in stream
// order, into the core or the dead-letter stream. Run it with Run(ctx);
// Close it before closing what Appender and DeadLetter use.
//
// Policy, in one place (settle): a decode failure (*bridge.BadEntryError)
// is dead-lettered at once; any other error or panic is retried in place
// with bounded exponential backoff, then dead-lettered with the error as
// reason; a dead letter that cannot be written fails the message, so the
// Subscriber sends it again and nothing is lost (of a batch, only the entries
// from the failing one on: those before it are acked, streams.Settled). Stream order holds throughout:
// the Subscriber sends the next message only once this one is settled.
func NewRouter(sub message.Subscriber, cfg IngestConfig) (*message.Router, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, NewWatermillLogger(cfg.Logger))
	if err != nil {
		return nil, err
	}
	// A panic is caught per entry (settle); Recoverer only keeps one outside
	// it from taking the process down.
	r.AddMiddleware(middleware.Recoverer)
	h := &ingestHandler{cfg: &cfg, log: cfg.Logger.With(zap.String("stream", cfg.Stream))}
	r.AddConsumerHandler(HandlerName, cfg.Stream, sub, h.handle)
	return r, nil
}

type ingestHandler struct {
	cfg *IngestConfig
	log *zap.Logger
}

func (h *ingestHandler) handle(msg *message.Message) error {
	entries := streams.Entries(msg)
	if entries == nil {
		entries = []streams.Entry{{ID: msg.Metadata.Get(streams.MetadataEntryID), Fields: msg.Metadata}}
		if entries[0].ID == "" {
			entries[0].ID = msg.UUID
		}
	}
	for i := range entries {
		if err := h.settle(msg.Context(), &entries[i]); err != nil {
			return err
		}
		// If a later entry fails the message, this one is acked and not
		// taken again: only the rest of the batch comes back.
		streams.Settled(msg, i+1)
	}
	return nil
}

// settle takes one entry into the core, or into the dead-letter stream when
// it is bad or its handling keeps failing. An error means the entry is not
// settled: the dead letter could not be written, or the node is shutting
// down during a retry.
func (h *ingestHandler) settle(ctx context.Context, e *streams.Entry) error {
	err := h.take(e)
	if err == nil {
		return nil
	}
	var bad *bridge.BadEntryError
	permanent := errors.As(err, &bad)
	pause := h.cfg.RetryInitial
	for attempt := 1; !permanent && attempt < h.cfg.RetryAttempts; attempt++ {
		h.cfg.Hooks.Retried()
		h.log.Debug("handler failed; retrying", zap.String("id", e.ID), zap.Int("attempt", attempt), zap.String("error", reasonOf(err)))
		if !backoff.Sleep(ctx, pause) {
			// Shutting down: leave the entry pending for the next start.
			return err
		}
		pause = min(2*pause, h.cfg.RetryMax)
		if err = h.take(e); err == nil {
			return nil
		}
		permanent = errors.As(err, &bad)
	}
	reason := reasonOf(err)
	if _, werr := h.cfg.DeadLetter.Write(ctx, e.ID, e.Fields, reason); werr != nil {
		h.cfg.Hooks.DeadLetterFailed()
		h.log.Error("writing a dead letter failed; the entry comes again", zap.String("id", e.ID), zap.Error(werr))
		return fmt.Errorf("dead letter for %s: %w", e.ID, werr)
	}
	h.cfg.Hooks.DeadLettered(bad != nil)
	// Never the data: it may be personal, and the dead letter has it.
	h.log.Warn("entry dead-lettered", zap.String("id", e.ID), zap.String("reason", reason))
	return nil
}

// take decodes e and appends it to the core; a panic comes back as an error.
func (h *ingestHandler) take(e *streams.Entry) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = middleware.RecoveredPanicError{V: p}
		}
	}()
	id, err := bridge.ParseID(e.ID)
	if err != nil {
		return &bridge.BadEntryError{Reason: "entry id: " + err.Error()}
	}
	ev, err := DecodeEntry(id, e.Fields, h.cfg.Limits)
	if err != nil {
		return err
	}
	if !h.cfg.Appender.Append(ev) {
		h.cfg.Hooks.Redelivered()
	}
	return nil
}

// reasonOf makes the one-line dead-letter reason of a handler error: a
// decode failure's own reason, a panic's value without its stack trace, or
// the first line of any other error.
func reasonOf(err error) string {
	var bad *bridge.BadEntryError
	if errors.As(err, &bad) {
		return oneLine(bad.Reason)
	}
	var p middleware.RecoveredPanicError
	if errors.As(err, &p) {
		return oneLine(fmt.Sprintf("handler panicked: %v", p.V))
	}
	return oneLine(err.Error())
}

// NewWatermillLogger adapts zap for Watermill. Watermill's Info lines
// (handler and subscriber lifecycle, per router) go to Debug, so that the
// bridge's own lifecycle lines stay the only ones at info.
func NewWatermillLogger(l *zap.Logger) watermill.LoggerAdapter { return &wmLogger{l: l} }

type wmLogger struct{ l *zap.Logger }

func zapFields(f watermill.LogFields) []zap.Field {
	out := make([]zap.Field, 0, len(f))
	for k, v := range f {
		out = append(out, zap.Any(k, v))
	}
	return out
}

func (w *wmLogger) Error(msg string, err error, f watermill.LogFields) {
	w.l.Error(msg, append(zapFields(f), zap.Error(err))...)
}
func (w *wmLogger) Info(msg string, f watermill.LogFields)  { w.l.Debug(msg, zapFields(f)...) }
func (w *wmLogger) Debug(msg string, f watermill.LogFields) { w.l.Debug(msg, zapFields(f)...) }
func (w *wmLogger) Trace(string, watermill.LogFields)       {}
func (w *wmLogger) With(f watermill.LogFields) watermill.LoggerAdapter {
	return &wmLogger{l: w.l.With(zapFields(f)...)}
}
