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

// NewRouter builds the ingest router: sub's messages (stream entries) go
// through the dead-letter policy, then middleware.Recoverer, then the handler
// that decodes them and appends them to the core. Run it with Run(ctx); Close
// it before closing what Appender and DeadLetter use.
//
// Policy, in one place: a decode failure (*bridge.BadEntryError) is
// dead-lettered at once; any other error or panic is retried in place with
// bounded exponential backoff, then dead-lettered with the error as reason;
// a dead letter that cannot be written nacks the message, so the Subscriber
// sends it again and nothing is lost. Stream order holds throughout: the
// Subscriber sends the next entry only once this one is settled.
func NewRouter(sub message.Subscriber, cfg IngestConfig) (*message.Router, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, NewWatermillLogger(cfg.Logger))
	if err != nil {
		return nil, err
	}
	// First added runs outermost: the policy sees what Recoverer made of a
	// panic as an ordinary error.
	r.AddMiddleware(newDeadLetterPolicy(&cfg).middleware, middleware.Recoverer)
	h := &ingestHandler{app: cfg.Appender, lim: cfg.Limits, hooks: cfg.Hooks}
	r.AddConsumerHandler(HandlerName, cfg.Stream, sub, h.handle)
	return r, nil
}

type ingestHandler struct {
	app   Appender
	lim   bridge.Limits
	hooks Hooks
}

func (h *ingestHandler) handle(msg *message.Message) error {
	id, err := EntryID(msg)
	if err != nil {
		return err
	}
	ev, err := DecodeEntry(id, msg.Metadata, h.lim)
	if err != nil {
		return err
	}
	if !h.app.Append(ev) {
		h.hooks.Redelivered()
	}
	return nil
}

// EntryID is the stream entry id of a message from streams.Subscriber.
func EntryID(msg *message.Message) (bridge.ID, error) {
	text := msg.Metadata.Get(streams.MetadataEntryID)
	if text == "" {
		text = msg.UUID
	}
	id, err := bridge.ParseID(text)
	if err != nil {
		return bridge.ID{}, &bridge.BadEntryError{Reason: "entry id: " + err.Error()}
	}
	return id, nil
}

type deadLetterPolicy struct {
	cfg *IngestConfig
	log *zap.Logger
}

func newDeadLetterPolicy(cfg *IngestConfig) *deadLetterPolicy {
	return &deadLetterPolicy{cfg: cfg, log: cfg.Logger.With(zap.String("stream", cfg.Stream))}
}

func (p *deadLetterPolicy) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err == nil {
			return out, nil
		}
		var bad *bridge.BadEntryError
		permanent := errors.As(err, &bad)
		pause := p.cfg.RetryInitial
		for attempt := 1; !permanent && attempt < p.cfg.RetryAttempts; attempt++ {
			p.cfg.Hooks.Retried()
			p.log.Debug("handler failed; retrying", zap.String("id", msg.UUID), zap.Int("attempt", attempt), zap.String("error", reasonOf(err)))
			if !backoff.Sleep(msg.Context(), pause) {
				// Shutting down: leave the entry pending for the next start.
				return nil, err
			}
			pause = min(2*pause, p.cfg.RetryMax)
			if out, err = h(msg); err == nil {
				return out, nil
			}
			permanent = errors.As(err, &bad)
		}
		reason := reasonOf(err)
		id := msg.Metadata.Get(streams.MetadataEntryID)
		if id == "" {
			id = msg.UUID
		}
		if _, werr := p.cfg.DeadLetter.Write(msg.Context(), id, msg.Metadata, reason); werr != nil {
			p.cfg.Hooks.DeadLetterFailed()
			p.log.Error("writing a dead letter failed; the entry comes again", zap.String("id", id), zap.Error(werr))
			return nil, fmt.Errorf("dead letter for %s: %w", id, werr)
		}
		p.cfg.Hooks.DeadLettered(bad != nil)
		// Never the data: it may be personal, and the dead letter has it.
		p.log.Warn("entry dead-lettered", zap.String("id", id), zap.String("reason", reason))
		return nil, nil
	}
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
