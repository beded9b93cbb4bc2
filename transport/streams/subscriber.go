package streams

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/internal/backoff"
)

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("streams: subscriber closed")

// Subscriber is a Watermill message.Subscriber reading one stream through one
// consumer group with one consumer, at least once and in stream order.
//
// It sends one message at a time (one entry, or with Config.Batched one read
// batch) and waits for its Ack or Nack before the next: the Watermill Router runs each message in its own goroutine, so this
// is what keeps stream order. Acked ids are batched and acknowledged with one
// XACK per batch, flushed on AckBatch, AckInterval and Close. A nacked message
// is sent again (a new message with the same content) after a backoff. Entries
// are only ever acked after their message was acked, so a crash loses none:
// they stay pending and are re-read first on the next start.
type Subscriber struct {
	client redis.UniversalClient
	cfg    Config

	mu         sync.Mutex // guards subscribed, closed, cancel
	subscribed bool
	closed     bool
	cancel     context.CancelFunc

	wg sync.WaitGroup // the consumer and acker goroutines
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber checks cfg and returns a Subscriber; nothing runs until
// Subscribe.
func NewSubscriber(client redis.UniversalClient, cfg Config) (*Subscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("streams: nil redis client")
	}
	s := &Subscriber{client: client, cfg: cfg}
	if s.cfg.StartID == nil {
		s.cfg.StartID = s.newestEntry
	}
	return s, nil
}

// Subscribe starts reading. topic must be the configured stream, and it can be
// subscribed once. The channel is closed when ctx is done or Close is called.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, ErrClosed
	case topic != s.cfg.Stream:
		return nil, fmt.Errorf("streams: subscriber is for stream %q, not %q", s.cfg.Stream, topic)
	case s.subscribed:
		return nil, fmt.Errorf("streams: stream %q is already subscribed", topic)
	}
	s.subscribed = true
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel

	out := make(chan *message.Message)
	a := newAcker(s.client, &s.cfg)
	c := &consumer{s: s, out: out, acks: a, batches: make(chan []redis.XMessage, 1),
		log: s.cfg.Logger.With(zap.String("stream", s.cfg.Stream), zap.String("group", s.cfg.Group))}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		a.run()
	}()
	go func() {
		defer s.wg.Done()
		c.run(runCtx)
	}()
	go func() {
		defer s.wg.Done()
		defer a.stop() // after the last add
		defer close(out)
		c.deliverLoop(runCtx)
	}()
	return out, nil
}

// Close stops reading, lets the in-flight message finish (up to
// CloseTimeout), flushes the acks and waits for every goroutine it started.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	return nil
}

// newestEntry is the default StartID: the newest entry, so that a fresh group
// reads what comes next; 0-0 for an empty or missing stream.
func (s *Subscriber) newestEntry(ctx context.Context) (string, error) {
	msgs, err := s.client.XRevRangeN(ctx, s.cfg.Stream, "+", "-", 1).Result()
	if err != nil {
		return "", err
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}

// consumer is one subscription: a reader goroutine (run) that owns the read
// state, and a deliverer goroutine (deliverLoop) that owns out.
type consumer struct {
	s    *Subscriber
	out  chan *message.Message
	acks *acker
	log  *zap.Logger

	// groupKnown is set once the group was seen or created, so that a later
	// NOGROUP means Redis lost it (and the core must be told).
	groupKnown bool
	// lastRead is the newest id the reader handed to the deliverer; pending
	// re-reads after an error start after it, so nothing read is sent twice.
	lastRead string
	// batches carries read batches from the reader to the deliverer; its
	// capacity of one bounds the read-ahead to one batch.
	batches chan []redis.XMessage
}

func (c *consumer) run(ctx context.Context) {
	cfg := &c.s.cfg
	pending := true // re-read our own pending entries first
	cursor := "0"
	retry := backoff.New(redisRetryMin, cfg.RetryBackoffMax)
	for ctx.Err() == nil {
		args := redis.XReadGroupArgs{
			Group:    cfg.Group,
			Consumer: cfg.Consumer,
			Count:    int64(cfg.BatchSize),
			Block:    -1, // pending entries are there or not: never block
		}
		if pending {
			args.Streams = []string{cfg.Stream, cursor}
		} else {
			args.Streams = []string{cfg.Stream, ">"}
			args.Block = cfg.Block
		}
		var (
			res   []redis.XStream
			err   error
			check *redis.XPendingExtCmd
		)
		if pending {
			res, err = c.s.client.XReadGroup(ctx, &args).Result()
		} else {
			// The lost-reply check rides in the same round trip: Redis runs
			// it right after the read returns, so it costs no extra wait on
			// the path of every new entry.
			pipe := c.s.client.Pipeline()
			read := pipe.XReadGroup(ctx, &args)
			check = c.pendingAfterLastRead(ctx, pipe)
			_, _ = pipe.Exec(ctx)
			res, err = read.Result()
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			if ctx.Err() != nil {
				return
			}
			cfg.Hooks.RedisError("xreadgroup", err)
			if isNoGroup(err) {
				if !c.createGroup(ctx, retry) {
					return
				}
			} else {
				c.log.Warn("reading the stream failed; retrying", zap.Error(err), zap.Duration("backoff", retry.Peek()))
				if !retry.Wait(ctx) {
					return
				}
			}
			// The reply may have been lost after Redis added entries to our
			// pending list: re-read those past the last one we read.
			pending, cursor = true, c.resumeCursor()
			continue
		}
		var msgs []redis.XMessage
		if len(res) > 0 {
			msgs = res[0].Messages
		}
		if !pending {
			lost, err := lostReply(check, msgs)
			if err != nil || lost {
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					cfg.Hooks.RedisError("xreadgroup", err)
					c.log.Warn("checking the pending entries failed; retrying", zap.Error(err), zap.Duration("backoff", retry.Peek()))
					if !retry.Wait(ctx) {
						return
					}
				} else {
					c.log.Warn("a read reply was lost (client retried on a new connection); re-reading pending entries")
				}
				// What this read returned is pending too and comes again,
				// after the entries the lost reply held.
				pending, cursor = true, c.resumeCursor()
				continue
			}
		}
		retry.Reset()
		c.groupKnown = true
		if len(msgs) == 0 {
			pending = false // our pending list is drained (or was empty)
			continue
		}
		cfg.Hooks.EntriesRead(len(msgs))
		// Read-ahead: hand the batch over and read the next one while it is
		// delivered, so Redis round trips overlap with the handlers.
		select {
		case c.batches <- msgs:
		case <-ctx.Done():
			return
		}
		c.lastRead = msgs[len(msgs)-1].ID
		if pending {
			cursor = c.lastRead
		}
	}
}

// deliverLoop delivers the batches the reader hands over, one message at a
// time, until ctx ends or a delivery is cut short.
func (c *consumer) deliverLoop(ctx context.Context) {
	// Messages' contexts derive from a detached copy (same values, never
	// done): a child of ctx itself would register with it and take its lock
	// twice per message (about 0.45 µs per entry at 400k entries/s,
	// profiled); deliver cancels them when ctx ends instead.
	detached := context.WithoutCancel(ctx)
	for {
		select {
		case batch := <-c.batches:
			if c.s.cfg.Batched {
				if !c.deliverBatch(ctx, detached, batch) {
					return
				}
				continue
			}
			for i := range batch {
				if !c.deliverEntry(ctx, detached, &batch[i]) {
					return
				}
			}
		case <-ctx.Done():
			return
		}
	}
}

// pendingAfterLastRead queues a look-up of the oldest entry of our pending
// list after the last one read. XPENDING answers with the id alone, not the
// entry's fields, so the check costs Redis and the decoder next to nothing.
func (c *consumer) pendingAfterLastRead(ctx context.Context, pipe redis.Pipeliner) *redis.XPendingExtCmd {
	cfg := &c.s.cfg
	start := "-"
	if c.lastRead != "" {
		start = idAfter(c.lastRead)
	}
	return pipe.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream:   cfg.Stream,
		Group:    cfg.Group,
		Start:    start,
		End:      "+",
		Count:    1,
		Consumer: cfg.Consumer,
	})
}

// idAfter is the smallest stream id greater than id ("ms-seq", as Redis
// returned it), as an inclusive range start: exclusive ranges need Redis
// 6.2, and the embedded Redis does not take them.
func idAfter(id string) string {
	msPart, seqPart, _ := strings.Cut(id, "-")
	ms, err1 := strconv.ParseUint(msPart, 10, 64)
	seq, err2 := strconv.ParseUint(seqPart, 10, 64)
	if err1 != nil || err2 != nil {
		return "(" + id // never from Redis; exclusive, for Redis 6.2 and later
	}
	if seq == math.MaxUint64 {
		return strconv.FormatUint(ms+1, 10) + "-0"
	}
	return msPart + "-" + strconv.FormatUint(seq+1, 10)
}

// lostReply reports, from check (pendingAfterLastRead, run right after the
// ">" read that returned msgs), whether our pending list holds an entry
// between the last one read and msgs (maybe none). That happens when Redis
// served a read whose reply never arrived and go-redis retried the command on
// a new connection (it does for EOF): the retry reads later entries, and the
// lost ones would wait in the pending list until the next restart. A retry
// of the whole pipeline runs the check again after the retried read, so it
// still sees what the lost reply held.
func lostReply(check *redis.XPendingExtCmd, msgs []redis.XMessage) (bool, error) {
	res, err := check.Result()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		return false, err
	}
	if len(res) == 0 {
		return false, nil
	}
	return len(msgs) == 0 || res[0].ID != msgs[0].ID, nil
}

func (c *consumer) resumeCursor() string {
	if c.lastRead == "" {
		return "0"
	}
	return c.lastRead
}

// createGroup creates the missing group at StartID, retrying Redis errors
// with backoff. It returns false only when ctx ended.
func (c *consumer) createGroup(ctx context.Context, retry *backoff.Backoff) bool {
	cfg := &c.s.cfg
	for {
		err := c.tryCreateGroup(ctx)
		if err == nil {
			retry.Reset()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		cfg.Hooks.RedisError("xgroup create", err)
		c.log.Warn("creating the consumer group failed; retrying", zap.Error(err), zap.Duration("backoff", retry.Peek()))
		if !retry.Wait(ctx) {
			return false
		}
	}
}

func (c *consumer) tryCreateGroup(ctx context.Context) error {
	cfg := &c.s.cfg
	start, err := cfg.StartID(ctx)
	if err != nil {
		return fmt.Errorf("start id: %w", err)
	}
	if start == "$" || start == "" {
		return fmt.Errorf("start id %q: want an entry id (never $: entries added meanwhile would be lost)", start)
	}
	err = c.s.client.XGroupCreateMkStream(ctx, cfg.Stream, cfg.Group, start).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	recreated := c.groupKnown
	c.groupKnown = true
	if err != nil {
		// Someone else created it meanwhile; it keeps its position.
		return nil
	}
	if recreated {
		c.log.Warn("consumer group was lost (Redis lost its data?) and was recreated", zap.String("start_id", start))
		if cfg.OnGroupRecreated != nil {
			cfg.OnGroupRecreated()
		}
	} else {
		c.log.Info("consumer group created", zap.String("start_id", start))
	}
	return nil
}

// deliverEntry hands one entry to the router as a message whose metadata
// are its fields, and waits until it is settled. It returns false when the
// subscription ends first; the entry then stays pending (unless its ack came
// in time) and is read again on the next start.
func (c *consumer) deliverEntry(ctx, detached context.Context, xm *redis.XMessage) bool {
	if len(xm.Values) == 0 {
		// Redis 7 returns pending entries trimmed since as an id without
		// fields: nothing to deliver, but they must leave the pending list.
		c.acks.add(xm.ID)
		return true
	}
	return c.deliver(ctx, detached, xm.ID, func(msgCtx context.Context) *message.Message {
		// A fresh copy of the fields per attempt: a handler may have changed
		// the last one.
		msg := message.NewMessage(xm.ID, nil)
		for k, v := range xm.Values {
			if s, ok := v.(string); ok {
				msg.Metadata[k] = s
			}
		}
		msg.Metadata[MetadataEntryID] = xm.ID
		msg.Metadata[MetadataEntryTime] = idTime(xm.ID)
		msg.SetContext(msgCtx)
		return msg
	}, func(*message.Message) bool {
		return true // the entry comes again
	}, func() { c.acks.add(xm.ID) })
}

// deliverBatch hands a whole read batch to the router as one message
// (Config.Batched) and waits until it is settled, like deliverEntry; its Ack
// acknowledges every entry of it. After a Nack (or a Close that cuts it
// short) the entries the handler marked Settled are acknowledged, and only
// the rest comes again.
func (c *consumer) deliverBatch(ctx, detached context.Context, batch []redis.XMessage) bool {
	entries, trimmed := toEntries(batch)
	for _, id := range trimmed {
		c.acks.add(id)
	}
	if len(entries) == 0 {
		return true
	}
	return c.deliver(ctx, detached, entries[0].ID, func(msgCtx context.Context) *message.Message {
		first := entries[0].ID
		msg := message.NewMessage(first, nil)
		msg.Metadata[MetadataEntryID] = first
		msg.Metadata[MetadataEntryTime] = idTime(first)
		msg.SetContext(context.WithValue(msgCtx, batchKey{}, &batchState{entries: entries}))
		return msg
	}, func(msg *message.Message) bool {
		b := msg.Context().Value(batchKey{}).(*batchState)
		n := min(int(b.settled.Load()), len(entries))
		c.acks.addEntries(entries[:n])
		entries = entries[n:]
		return len(entries) > 0
	}, func() { c.acks.addEntries(entries) })
}

// deliver sends the message newMsg makes to the router and waits until it is
// settled. Acked: it calls onAck. Nacked, or cut short by the end of the
// subscription: it calls unsettled, and if that returns true (something is
// left to send) and the subscription goes on it sends a new message after a
// backoff (Watermill messages are acked
// once). It returns false when the subscription ends first. id names the
// message in the log.
func (c *consumer) deliver(ctx, detached context.Context, id string, newMsg func(context.Context) *message.Message,
	unsettled func(msg *message.Message) bool, onAck func()) bool {
	var redeliver *backoff.Backoff // only after a nack
	for {
		if ctx.Err() != nil {
			return false // select below would pick at random
		}
		// Each attempt has its own context, cancelled once it is settled (or
		// the subscription ends): work a handler started under it stops
		// with it, as with Watermill's own Subscribers.
		msgCtx, cancel := context.WithCancel(detached)
		msg := newMsg(msgCtx)
		select {
		case c.out <- msg:
		case <-ctx.Done():
			cancel()
			return false
		}
		acked, settled := c.waitSettled(ctx, msg, id, cancel)
		cancel()
		if acked {
			onAck()
			return true
		}
		if !unsettled(msg) {
			return true // nothing is left to send
		}
		if !settled {
			return false
		}
		if redeliver == nil {
			redeliver = backoff.New(c.s.cfg.NackBackoff, c.s.cfg.NackBackoffMax)
		}
		if !redeliver.Wait(ctx) {
			return false
		}
	}
}

// waitSettled waits for msg's Ack or Nack. When ctx ends first it cancels the
// message's context and still waits up to CloseTimeout, so an entry being
// handled during shutdown is acked.
// It reads only msg's ack channels: the message belongs to the handler now,
// which may change its fields (id is the entry id, for the log).
func (c *consumer) waitSettled(ctx context.Context, msg *message.Message, id string, cancelMsg context.CancelFunc) (acked, settled bool) {
	select {
	case <-msg.Acked():
		return true, true
	case <-msg.Nacked():
		return false, true
	case <-ctx.Done():
		cancelMsg() // the subscription ended: so does the message's context
	}
	t := time.NewTimer(c.s.cfg.CloseTimeout)
	defer t.Stop()
	select {
	case <-msg.Acked():
		return true, true
	case <-msg.Nacked():
		return false, false
	case <-t.C:
		c.log.Warn("in-flight entry not settled before close; it stays pending", zap.String("id", id))
		return false, false
	}
}

// idTime returns the ms part of an entry id without allocating.
func idTime(id string) string {
	if i := strings.IndexByte(id, '-'); i >= 0 {
		return id[:i]
	}
	return id
}

func isNoGroup(err error) bool {
	return strings.HasPrefix(err.Error(), "NOGROUP")
}
