package bench

import (
	"context"
	"time"
)

// idle connects every client, holds the connections for Duration and
// reports what they cost the bridge.
func (r *runner) idle(ctx context.Context) error {
	base, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := r.connectCaughtUp(ctx, "", 120*time.Second); err != nil {
		return err
	}
	r.res.Seconds = time.Since(start).Seconds()
	hold := r.o.Duration
	if hold <= 0 {
		hold = 5 * time.Second
	}
	r.logf("holding %d idle connections for %v", r.o.Clients, hold)
	if err := sleep(ctx, hold); err != nil {
		return err
	}
	after, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	r.fillProcess(base, after)
	return nil
}

// fanout is broadcast, targeted and mixed: connected, caught-up clients,
// events published at Rate, then a wait until everything is delivered.
func (r *runner) fanout(ctx context.Context) error {
	base, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	if err := r.connectCaughtUp(ctx, "", 120*time.Second); err != nil {
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
	bar := newProgress(r.o, r.o.Events, "publishing")
	publish := r.producer(ctx, bar)
	pubStart := time.Now()
	if r.o.Scenario == "refresh" {
		wave := r.startWave(ctx)
		defer func() { <-wave }()
	}
	r.loadStartS = pubStart.Sub(r.t0).Seconds()
	if r.o.Scenario == "mixed" {
		r.res.BroadcastShare, r.res.ChurnPerS = r.o.BroadcastShare, r.o.Churn
		if err := r.churn(ctx, true); err != nil {
			return err
		}
	}
	err = pace(ctx, r.o.Rate, r.o.Events, publish)
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
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
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
	case "targeted", "refresh":
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

// resumeStorm fills the stream, then connects every client at once,
// resuming from before everything it missed.
func (r *runner) resumeStorm(ctx context.Context) error {
	o := r.o
	resumeFrom, err := r.prefill(ctx)
	if err != nil {
		return err
	}
	r.stormed = true
	r.res.Published = 1 + o.Prefill + o.Clients*o.Missed // the marker, the filler, the missed events
	// The storm starts once the bridge holds everything (acknowledged means
	// in the replay window), so it measures resume, not ingest.
	if err := waitIngested(ctx, r.rdb, o.Stream, 120*time.Second); err != nil {
		r.logf("%v; starting the storm anyway", err)
	}
	readsBefore := streamReads(ctx, r.rdb)
	base, _ := scrape(o.AdminURL)
	start := time.Now()
	r.caughtUpOrigin = start.UnixMicro()
	if err := r.connectCaughtUp(ctx, resumeFrom, 300*time.Second); err != nil {
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
