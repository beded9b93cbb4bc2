package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

func (r *runner) idle(ctx context.Context) error {
	base, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := r.connect(ctx, ""); err != nil {
		return err
	}
	if err := r.waitCaughtUp(ctx, 120*time.Second); err != nil {
		return err
	}
	r.res.Seconds = time.Since(start).Seconds()
	hold := r.o.Duration
	if hold <= 0 {
		hold = 5 * time.Second
	}
	r.logf("holding %d idle connections for %v", r.o.Clients, hold)
	select {
	case <-time.After(hold):
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	r.fillProcess(base, after)
	return nil
}

func (r *runner) fanout(ctx context.Context) error {
	base, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	if err := r.connect(ctx, ""); err != nil {
		return err
	}
	if err := r.waitCaughtUp(ctx, 120*time.Second); err != nil {
		return err
	}
	if err := r.connectSlow(ctx); err != nil {
		return err
	}
	r.perUser = make([]int64, r.o.Clients)
	var raw *rawReader
	if r.o.RawXRead {
		rctx, stopRaw := context.WithCancel(ctx)
		raw = startRawReader(rctx, r.rdb, r.o.Stream)
		defer func() {
			stopRaw()
			<-raw.done
			r.res.RawP50ms, r.res.RawP99ms, r.res.RawMaxMs = raw.hist.quantile(.50), raw.hist.quantile(.99), raw.hist.quantile(1)
		}()
		time.Sleep(100 * time.Millisecond) // let its first XREAD … $ block before publishing
	}
	// Data carries the publish time (unix µs) and, for targeted events, the
	// one user it is for, so clients measure latency and catch misdelivery.
	// Mixed draws each event's kind: a broadcast with BroadcastShare, else
	// targeted.
	tag := `,` + string(runTag(r.run))
	pad := strings.Repeat("x", max(0, r.o.Size-len(`{"t":1732451234567890,"u":12345,"p":""}`)-len(tag)))
	rng := rand.New(rand.NewPCG(1, 2))
	bar := newProgress(r.o, r.o.Events, "publishing")
	pubStart := time.Now()
	r.loadStartS = pubStart.Sub(r.t0).Seconds()
	if r.o.Scenario == "mixed" {
		r.res.BroadcastShare, r.res.ChurnPerS = r.o.BroadcastShare, r.o.Churn
		if err := r.churn(ctx, true); err != nil {
			return err
		}
	}
	err = pace(ctx, r.o.Rate, r.o.Events, func(batch int) error {
		pipe := r.rdb.Pipeline()
		for i := 0; i < batch; i++ {
			to, u := "*", ""
			if r.o.Scenario == "targeted" || (r.o.Scenario == "mixed" && rng.Float64() >= r.o.BroadcastShare) {
				k := rng.IntN(r.o.Clients)
				to, u = "user:"+userName(r.run, k), `,"u":`+strconv.Itoa(k)
				r.perUser[k]++
			} else {
				r.broadcasts++
			}
			data := `{"t":` + strconv.FormatInt(time.Now().UnixMicro(), 10) + u + tag + `,"p":"` + pad + `"}`
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: r.o.Stream, Values: []any{"to", to, "type", "bench", "data", data}})
		}
		_, err := pipe.Exec(ctx)
		bar.add(batch)
		return err
	})
	bar.finish()
	pubDone := time.Since(pubStart)
	if cerr := r.churn(ctx, false); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	r.res.Published = r.o.Events
	if r.o.Scenario == "mixed" {
		r.res.Broadcasts = int(r.broadcasts)
	}
	var total int64
	for i := range r.o.Clients {
		total += r.expected(i)
	}
	// Wait until every client has everything, or nothing moved for 10 s.
	last, lastChange := int64(-1), time.Now()
	for {
		got := r.status().Received
		if got >= total {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > 10*time.Second {
			r.logf("delivery stalled at %d of %d", got, total)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	elapsed := time.Since(pubStart)
	if after, err := scrape(r.o.AdminURL); err == nil {
		r.fillProcess(base, after)
	}
	r.res.Seconds = elapsed.Seconds()
	r.res.PublishedPerS = float64(r.o.Events) / pubDone.Seconds()
	return nil
}

// expected is how many events of the run client i must receive.
func (r *runner) expected(i int) int64 {
	switch r.o.Scenario {
	case "broadcast":
		return int64(r.res.Published)
	case "targeted":
		if r.perUser == nil {
			return 0
		}
		return r.perUser[i]
	case "mixed":
		// Every client was connected and caught up before the first event,
		// so every broadcast is for it; a reconnect resumes, it never
		// starts afresh.
		if r.perUser == nil {
			return 0
		}
		return r.perUser[i] + r.broadcasts
	case "resume-storm":
		if !r.stormed {
			return 0
		}
		return int64(r.o.Missed)
	}
	return 0
}

func (r *runner) resumeStorm(ctx context.Context) error {
	o := r.o
	// The stream: a marker entry the clients resume from, then Prefill
	// filler entries (for a group no client is in) with each client's
	// Missed events spread evenly among them, the way a busy stream looks
	// to clients that were away. Every resume spans the whole prefill, so
	// it is served from the replay window only when the window holds it all.
	pad := strings.Repeat("x", max(0, o.Size-8))
	filler := []any{"to", "group:filler", "type", "fill", "data", `"` + pad + `"`}
	resumeFrom, err := r.rdb.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: filler}).Result()
	if err != nil {
		return fmt.Errorf("prefill: %w", err)
	}
	missedTotal := o.Clients * o.Missed
	total := o.Prefill + missedTotal
	bar := newProgress(o, total, "prefilling")
	pipe := r.rdb.Pipeline()
	m := 0 // missed events written: event m is for client m%Clients
	for i := 0; i < total; i++ {
		// Missed event m goes where m/missedTotal of the stream has been written.
		if m < missedTotal && (o.Prefill == 0 || int64(m)*int64(total) <= int64(i)*int64(missedTotal)) {
			u := m % o.Clients
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: []any{"to", "user:" + userName(r.run, u), "type", "missed",
				"data", `{"k":` + strconv.Itoa(m/o.Clients) + `,"u":` + strconv.Itoa(u) + `,` + string(runTag(r.run)) + `}`}})
			m++
		} else {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: filler})
		}
		if i%1000 == 999 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			bar.add(1000)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	bar.finish()
	if m != missedTotal {
		return fmt.Errorf("prefill wrote %d of %d missed events", m, missedTotal)
	}
	r.stormed = true
	r.res.Published = 1 + total
	// The storm starts once the bridge holds everything (acknowledged means
	// in the replay window), so it measures resume, not ingest.
	if err := waitIngested(ctx, r.rdb, o.Stream, 120*time.Second); err != nil {
		r.logf("%v; starting the storm anyway", err)
	}
	readsBefore := streamReads(ctx, r.rdb)
	base, _ := scrape(o.AdminURL)
	start := time.Now()
	r.caughtUpOrigin = start.UnixMicro()
	if err := r.connect(ctx, resumeFrom); err != nil {
		return err
	}
	if err := r.waitCaughtUp(ctx, 300*time.Second); err != nil {
		return err
	}
	// Every client is caught up: wait for the deliveries still in flight
	// (caught_up follows the missed events on each connection, so this is
	// short), then read the Redis counters.
	want := int64(o.Clients * o.Missed)
	deadline := time.Now().Add(10 * time.Second)
	for r.status().Received < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	readsAfter := streamReads(ctx, r.rdb)
	if readsBefore >= 0 && readsAfter >= 0 {
		r.res.StreamReads = readsAfter - readsBefore
	} else {
		r.res.StreamReads = -1
	}
	if after, err := scrape(o.AdminURL); err == nil {
		r.fillProcess(base, after)
	}
	r.res.Seconds = time.Since(start).Seconds()
	return nil
}
