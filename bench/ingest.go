package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/notifybridge/notifybridge/config"
	"github.com/redis/go-redis/v9"
)

// The ingest scenario measures catch-up: how fast a bridge that starts
// behind a backlog reads, routes and acknowledges it. It needs a Redis of
// its own choosing (--redis-url) because the backlog must be there before
// the bridge starts. The bridge's consumer group is created at 0 before the
// launch, so the bridge must read the whole backlog; the time runs from
// the process launch (start-up included, as after a deploy) until XINFO
// GROUPS shows the group has read every entry and has none pending. Then,
// in the same run and on the same backlog, a plain XREADGROUP COUNT 256 +
// XACK loop in this process, in a group of its own, gives Redis's own
// rate on this machine as the yardstick.

const (
	ingestStall = 30 * time.Second // no progress this long ends the run
	rawBatch    = 256              // the raw loop's COUNT, the bridge's default ingest_batch
)

// ingestResult is what the ingest scenario adds to Result.
type ingestResult struct {
	BridgeSeconds float64 `json:"bridge_catch_up_seconds,omitempty"`   // launch → all read and acknowledged
	BridgeReadyS  float64 `json:"bridge_ready_seconds,omitempty"`      // launch → /readyz 200
	BridgePerS    float64 `json:"bridge_entries_per_second,omitempty"` // Prefill / BridgeSeconds
	BridgeAcked   int64   `json:"bridge_acked,omitempty"`              // entries read and not pending at the end
	DeadLetters   int64   `json:"dead_letters,omitempty"`              // entries the bridge dead-lettered: lost for clients
	SweepSeconds  float64 `json:"bridge_sweep_done_seconds,omitempty"` // launch → skipped entries checked for dead letters
	ReadBefore    int     `json:"read_before_backlog,omitempty"`       // --delivered: older entries the group had read
	RawSeconds    float64 `json:"raw_loop_seconds,omitempty"`
	RawPerS       float64 `json:"raw_entries_per_second,omitempty"`
	RawAcked      int64   `json:"raw_acked,omitempty"`
	RawRatio      float64 `json:"raw_to_bridge_ratio,omitempty"` // RawPerS / BridgePerS
	EntryBytes    int     `json:"entry_data_bytes,omitempty"`
}

// ingest runs the scenario with a started bridge; res is filled in place.
func ingest(ctx context.Context, o Options, res *Result) error {
	if o.WSURL != "" {
		return errors.New("ingest starts the bridge itself (it times the launch): drop --ws-url and give --redis-url")
	}
	if o.RedisURL == "" {
		return errors.New("ingest needs --redis-url: the backlog is written before the bridge starts, so the embedded Redis cannot hold it")
	}
	ropts, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		return fmt.Errorf("redis-url: %w", err)
	}
	ropts.PoolSize = 4
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	run := runID()
	if o.Stream == "" {
		o.Stream = "bench-" + run
	}
	res.Stream, res.Clients, res.EntryBytes, res.ReadBefore = o.Stream, 0, o.Size, o.Delivered
	// The backlog must be the stream's whole content, and a stream someone
	// else uses is never written to nor deleted.
	if n, err := rdb.Exists(ctx, o.Stream).Result(); err != nil || n > 0 {
		return fmt.Errorf("stream %s: must not exist yet (exists %d, %v)", o.Stream, n, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = rdb.Del(dctx, o.Stream, o.Stream+":dead").Err()
	}()
	r := &runner{o: o, rdb: rdb, res: res, t0: time.Now(), run: run}
	// With --delivered, older entries the group has read already come first:
	// the window warms full of events anyway, and the backlog follows them.
	start := "0"
	if o.Delivered > 0 {
		if start, err = r.fillBacklog(ctx, o.Delivered); err != nil {
			return err
		}
	}
	r.start = start
	last, err := r.fillBacklog(ctx, o.Prefill)
	if err != nil {
		return err
	}
	res.Published = o.Delivered + o.Prefill
	nodeID := "bench-" + run
	group := config.GroupPrefix + nodeID
	if err := r.createGroup(ctx, group); err != nil {
		return err
	}
	if !hasFlag(o.Extra, "retention") {
		o.Extra = append([]string{"--retention", o.Retention}, o.Extra...) // the trimmer must leave the backlog alone
	}
	r.logf("starting the bridge behind %d entries of %d B (group %s at %s)", o.Prefill, o.Size, group, start)
	launched := time.Now()
	c, err := launchChild(o, nodeID)
	if err != nil {
		return err
	}
	err = r.waitCatchUp(ctx, c, group, last, launched)
	if err == nil {
		err = r.waitSweep(ctx, c, group, launched)
	}
	if after, serr := scrape(c.adminURL); serr == nil {
		r.fillProcess(metricsSnapshot{}, after) // since launch: start-up is part of catching up
		res.RSSPerConnBytes, res.HeapPerConn = 0, 0
	}
	c.stop()
	if err != nil {
		return err
	}
	if n, err := rdb.XLen(ctx, o.Stream+":dead").Result(); err == nil {
		res.DeadLetters = n
	}
	res.Lost = int64(o.Prefill) - res.BridgeAcked + res.DeadLetters
	if err := r.rawLoop(ctx); err != nil {
		return err
	}
	if res.BridgePerS > 0 {
		res.RawRatio = res.RawPerS / res.BridgePerS
	}
	res.Seconds = res.BridgeSeconds
	return nil
}

// createGroup creates group at r.start, telling Redis how many entries that
// is so the group's lag stays known.
func (r *runner) createGroup(ctx context.Context, group string) error {
	err := r.rdb.Do(ctx, "XGROUP", "CREATE", r.o.Stream, group, r.start, "ENTRIESREAD", r.o.Delivered).Err()
	if err != nil {
		return fmt.Errorf("XGROUP CREATE %s: %w", group, err)
	}
	return nil
}

// waitSweep waits until the bridge's background sweep of the entries it
// skipped (for their dead letters) is done: its field leaves <stream>:sweeps.
func (r *runner) waitSweep(ctx context.Context, c *child, group string, launched time.Time) error {
	deadline := time.Now().Add(ingestStall)
	for {
		n, err := r.rdb.HExists(ctx, r.o.Stream+":sweeps", group).Result()
		if err != nil {
			return err
		}
		if !n {
			r.res.SweepSeconds = time.Since(launched).Seconds()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the bridge's sweep for dead letters did not finish in %v:\n%s", ingestStall, c.log)
		}
		select {
		case <-c.done:
			return fmt.Errorf("bridge exited while sweeping:\n%s", c.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// fillBacklog writes n entries of about Size bytes of data, each for one of
// 1000 users no one connects as (routing without delivery, as for the
// clients of other nodes), and returns the last id.
func (r *runner) fillBacklog(ctx context.Context, n int) (string, error) {
	o := r.o
	tag := `,` + string(runTag(r.run))
	pad := strings.Repeat("x", max(0, o.Size-len(`{"t":1732451234567890,"p":""}`)-len(tag)))
	bar := newProgress(o, n, "prefilling")
	defer bar.finish()
	var last *redis.StringCmd
	for sent := 0; sent < n; {
		pipe := r.rdb.Pipeline()
		batch := min(1000, n-sent)
		for i := range batch {
			to := "user:" + userName(r.run, (sent+i)%1000)
			data := `{"t":` + strconv.FormatInt(time.Now().UnixMicro(), 10) + tag + `,"p":"` + pad + `"}`
			last = pipe.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: []any{"to", to, "type", "fill", "data", data}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return "", fmt.Errorf("prefill: %w", err)
		}
		sent += batch
		bar.add(batch)
	}
	if last == nil {
		return "", errors.New("prefill: nothing to write (--prefill must be > 0)")
	}
	return last.Val(), nil
}

// waitCatchUp polls XINFO GROUPS until group has read every entry up to
// last and has nothing pending, and records the bridge's readiness and a
// timeline (entries read, RSS, CPU) on the way.
func (r *runner) waitCatchUp(ctx context.Context, c *child, group, last string, launched time.Time) error {
	res, want := r.res, int64(r.o.Delivered+r.o.Prefill)
	hc := http.Client{Timeout: time.Second}
	var done int64 // read and acknowledged
	lastMove, lastPoint := time.Now(), time.Time{}
	bar := newProgress(r.o, r.o.Prefill, "catching up")
	defer bar.finish()
	for {
		if res.BridgeReadyS == 0 {
			if resp, err := hc.Get(c.adminURL + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					res.BridgeReadyS = time.Since(launched).Seconds()
				}
			}
		}
		g, err := groupInfo(ctx, r.rdb, r.o.Stream, group)
		now := time.Now()
		if err != nil {
			return err
		}
		if d := g.EntriesRead - g.Pending - int64(r.o.Delivered); d != done {
			bar.add(int(d - done))
			done, lastMove = d, now
		}
		if g.EntriesRead >= want && g.Pending == 0 && g.LastDeliveredID == last {
			res.BridgeSeconds = now.Sub(launched).Seconds()
			res.BridgePerS = float64(r.o.Prefill) / res.BridgeSeconds
			res.BridgeAcked = int64(r.o.Prefill)
			r.point(c, g.EntriesRead)
			return nil
		}
		if now.Sub(lastPoint) >= 250*time.Millisecond {
			r.point(c, g.EntriesRead)
			lastPoint = now
		}
		if now.Sub(lastMove) > ingestStall {
			res.BridgeAcked = done
			return fmt.Errorf("bridge stalled at %d of %d entries acknowledged (read %d, pending %d):\n%s", done, want, g.EntriesRead, g.Pending, c.log)
		}
		select {
		case <-c.done:
			return fmt.Errorf("bridge exited while catching up (%d of %d acknowledged):\n%s", done, want, c.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// point adds a timeline point: entries read so far as Received, and the
// bridge's process metrics.
func (r *runner) point(c *child, read int64) {
	p := point{AtS: time.Since(r.t0).Seconds(), Received: read}
	if m, err := scrape(c.adminURL); err == nil {
		p.RSSBytes, p.Goroutines, p.CPUSeconds = m.rss, m.goroutines, m.cpu
	}
	r.res.Timeline = append(r.res.Timeline, p)
}

func groupInfo(ctx context.Context, rdb *redis.Client, stream, group string) (redis.XInfoGroup, error) {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return redis.XInfoGroup{}, fmt.Errorf("XINFO GROUPS %s: %w", stream, err)
	}
	for _, g := range groups {
		if g.Name == group {
			return g, nil
		}
	}
	return redis.XInfoGroup{}, fmt.Errorf("group %s is gone from %s", group, stream)
}

// rawLoop reads the backlog as a minimal consumer would: XREADGROUP COUNT
// 256, then XACK of what it read, one round trip after the other, in a
// group of its own created at 0. The bridge is stopped by then, so the two
// do not share the cores.
func (r *runner) rawLoop(ctx context.Context) error {
	o, res := r.o, r.res
	group := "bench-raw-" + r.run
	if err := r.createGroup(ctx, group); err != nil {
		return err
	}
	bar := newProgress(o, o.Prefill, "raw XREADGROUP loop")
	defer bar.finish()
	ids := make([]string, 0, rawBatch)
	var acked int64
	start := time.Now()
	for acked < int64(o.Prefill) {
		s, err := r.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "raw", Streams: []string{o.Stream, ">"},
			Count: rawBatch, Block: -1}).Result()
		if errors.Is(err, redis.Nil) {
			break // nothing left
		}
		if err != nil {
			return fmt.Errorf("raw XREADGROUP: %w", err)
		}
		ids = ids[:0]
		for _, m := range s[0].Messages {
			ids = append(ids, m.ID)
		}
		if len(ids) == 0 {
			break
		}
		n, err := r.rdb.XAck(ctx, o.Stream, group, ids...).Result()
		if err != nil {
			return fmt.Errorf("raw XACK: %w", err)
		}
		acked += n
		bar.add(len(ids))
	}
	res.RawSeconds = time.Since(start).Seconds()
	res.RawAcked = acked
	if res.RawSeconds > 0 {
		res.RawPerS = float64(acked) / res.RawSeconds
	}
	if acked != int64(o.Prefill) {
		return fmt.Errorf("raw loop acknowledged %d of %d entries", acked, o.Prefill)
	}
	return nil
}
