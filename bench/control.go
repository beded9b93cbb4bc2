package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The control-plane scenarios (issue 16), each against the real binary:
//
//   - revoke: connected clients, then control=disconnect entries XADDed for
//     one user at a time and for whole groups; latency is XADD → the close
//     (4001) read by the client, per closed connection.
//   - refresh: targeted events at a rate while every client sends a new
//     token in band at once ({"token":"<jwt>"}), all first tokens with the
//     same exp; the live latency before, during and after that wave, and
//     whether any connection closed.
//   - publish: POST /v1/publish as fast as Concurrency requests in flight
//     allow, then the same events by XADD from the same process.

// controlResult is what the control-plane scenarios measured.
type controlResult struct {
	GroupSize       int       `json:"group_size,omitempty"`
	RevokeUserN     int64     `json:"revoke_user_closes,omitempty"`
	RevokeUserP50   float64   `json:"revoke_user_p50_ms,omitempty"`
	RevokeUserP99   float64   `json:"revoke_user_p99_ms,omitempty"`
	RevokeUserMax   float64   `json:"revoke_user_max_ms,omitempty"`
	RevokeGroupN    int64     `json:"revoke_group_closes,omitempty"`
	RevokeGroupP50  float64   `json:"revoke_group_p50_ms,omitempty"`
	RevokeGroupP99  float64   `json:"revoke_group_p99_ms,omitempty"`
	RevokeGroupMax  float64   `json:"revoke_group_max_ms,omitempty"`
	RevokeGroupLast []float64 `json:"revoke_group_all_closed_ms,omitempty"` // per group: XADD → its last member closed
	RevokeExpected  int       `json:"revoke_expected_closes,omitempty"`
	RevokeStray     int       `json:"revoke_stray_closes,omitempty"` // closes of clients nobody revoked, or with another code

	TokenAcks   int64        `json:"token_answers,omitempty"`
	BadAcks     int64        `json:"token_answers_wrong_exp,omitempty"`
	WaveSeconds float64      `json:"refresh_wave_seconds,omitempty"` // first token sent → last answer read
	Spread      float64      `json:"refresh_spread_seconds,omitempty"`
	Phases      []phaseStats `json:"phases,omitempty"`

	Concurrency  int     `json:"concurrency,omitempty"`
	HTTPAccepted int64   `json:"http_accepted,omitempty"`
	HTTPErrors   int64   `json:"http_errors,omitempty"`
	HTTPPerS     float64 `json:"http_publish_per_second,omitempty"`
	HTTPP50      float64 `json:"http_publish_p50_ms,omitempty"`
	HTTPP99      float64 `json:"http_publish_p99_ms,omitempty"`
	HTTPCPUus    float64 `json:"http_phase_bridge_cpu_us_per_event,omitempty"`
	XAddPerS     float64 `json:"xadd_per_second,omitempty"`
	XAddP50      float64 `json:"xadd_p50_ms,omitempty"`
	XAddP99      float64 `json:"xadd_p99_ms,omitempty"`
	XAddCPUus    float64 `json:"xadd_phase_bridge_cpu_us_per_event,omitempty"`
	StreamGrowth int64   `json:"stream_growth,omitempty"`
}

// phaseStats is the live latency of one phase of a refresh run.
type phaseStats struct {
	Name string  `json:"name"`
	N    int64   `json:"deliveries"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

var phaseNames = [phaseCount]string{"before the wave", "during the wave (+1 s)", "after the wave"}

// waveSettle is how long after the last token answer phase 1 lasts.
const waveSettle = time.Second

func (o *Options) validateControl() error {
	switch o.Scenario {
	case "revoke":
		if o.GroupSize <= 0 {
			o.GroupSize = 1000
		}
		groups := (o.Clients + o.GroupSize - 1) / o.GroupSize
		if o.RevokeGroups < 0 || o.RevokeGroups > groups {
			return fmt.Errorf("revoke-groups: must be between 0 and the %d groups of %d clients", groups, o.GroupSize)
		}
		if free := o.Clients - o.RevokeGroups*o.GroupSize; o.Revokes < 0 || o.Revokes > max(free, 0) {
			return fmt.Errorf("revokes: must be between 0 and the %d clients outside the revoked groups", max(free, 0))
		}
		if o.Revokes == 0 && o.RevokeGroups == 0 {
			return errors.New("revokes: nothing to revoke (set --revokes or --revoke-groups)")
		}
	case "refresh":
		if o.RefreshSpread < 0 || o.RefreshSpread > 0 && o.RefreshSpread >= o.Duration/2 {
			return fmt.Errorf("refresh-spread: must be >= 0 and shorter than half of --duration (%v)", o.Duration)
		}
		if o.JWTSecret == "" {
			if o.WSURL != "" {
				return errors.New("jwt-secret: refresh against --ws-url needs the bridge's HS256 secret")
			}
			o.JWTSecret = randomKey()
		}
	case "publish":
		if o.PublishKey == "" {
			if o.WSURL != "" {
				return errors.New("publish-key: publish against --ws-url needs the bridge's publish_key")
			}
			o.PublishKey = randomKey()
		}
		if o.Concurrency <= 0 {
			o.Concurrency = 8
		}
		if o.Events == 0 {
			o.Events = 20000
		}
		o.Clients = max(o.Clients, 1) // no clients connect
	default:
		o.GroupSize = 0 // revoke only (refresh: 0, no groups)
	}
	return nil
}

func randomKey() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// revoke connects the clients (in groups of GroupSize), revokes Revokes
// single users one after another (20 a second, each in a group left alone),
// then the last RevokeGroups groups one at a time, each once the previous
// one's members have all closed.
func (r *runner) revoke(ctx context.Context) error {
	o := r.o
	r.res.GroupSize = o.GroupSize
	base, err := scrape(o.AdminURL)
	if err != nil {
		return err
	}
	if err := r.connectCaughtUp(ctx, "", 120*time.Second); err != nil {
		return err
	}
	r.revokedAt = make([]int64, o.Clients)
	r.revokedKind = make([]byte, o.Clients)
	groups := (o.Clients + o.GroupSize - 1) / o.GroupSize
	firstRevoked := groups - o.RevokeGroups // groups firstRevoked… are revoked whole
	free := min(o.Clients, firstRevoked*o.GroupSize)
	closedBefore := r.status().Closed
	disconnect := func(to string) (int64, error) {
		at := time.Now().UnixMicro()
		err := r.rdb.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: []any{"to", to, "control", "disconnect", "reason", "bench"}}).Err()
		return at, err
	}
	waitClosed := func(want int64, timeout time.Duration) error {
		deadline := time.Now().Add(timeout)
		for r.status().Closed-closedBefore < want {
			if time.Now().After(deadline) {
				r.logf("revoke: %d of %d connections closed within %v", r.status().Closed-closedBefore, want, timeout)
				return nil
			}
			if err := sleep(ctx, 2*time.Millisecond); err != nil {
				return err
			}
		}
		return nil
	}
	expected := 0
	if o.Revokes > 0 {
		r.logf("revoking %d single users, 20 a second", o.Revokes)
		stride := max(1, free/o.Revokes)
		for k := range o.Revokes {
			u := k * stride
			at, err := disconnect("user:" + userName(r.run, u))
			if err != nil {
				return fmt.Errorf("revoke: XADD: %w", err)
			}
			r.revokedAt[u], r.revokedKind[u] = at, 'u'
			expected++
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return err
			}
		}
		if err := waitClosed(int64(expected), 10*time.Second); err != nil {
			return err
		}
	}
	for g := firstRevoked; g < groups; g++ {
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
		at, err := disconnect("group:" + groupName(r.run, g))
		if err != nil {
			return fmt.Errorf("revoke: XADD: %w", err)
		}
		for u := g * o.GroupSize; u < min(o.Clients, (g+1)*o.GroupSize); u++ {
			if r.revokedAt[u] == 0 {
				r.revokedAt[u], r.revokedKind[u] = at, 'g'
				expected++
			}
		}
		r.res.RevokeGroupLast = append(r.res.RevokeGroupLast, 0)
		if err := waitClosed(int64(expected), 20*time.Second); err != nil {
			return err
		}
	}
	r.res.RevokeExpected = expected
	if after, err := scrape(o.AdminURL); err == nil {
		r.fillProcess(base, after)
	}
	return nil
}

// startWave (refresh) sends every client a new token halfway through the
// publishing, and marks the phases around it: 0 before, 1 from the first
// token sent until every answer is in (or 30 s) and waveSettle more, 2 after. The returned
// channel closes when the wave is over.
func (r *runner) startWave(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if sleep(ctx, r.o.Duration/2) != nil {
			return
		}
		for _, f := range r.fleets {
			f.command("phase 1")
		}
		r.res.Spread = r.o.RefreshSpread.Seconds()
		r.logf("refresh: %d tokens sent in band (spread over %v)", r.o.Clients, r.o.RefreshSpread)
		start := time.Now()
		var wg sync.WaitGroup
		for _, f := range r.fleets {
			wg.Go(func() { f.command("refresh") })
		}
		wg.Wait()
		deadline := start.Add(30 * time.Second)
		for r.status().Acks < int64(r.o.Clients) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond)
		}
		r.res.WaveSeconds = time.Since(start).Seconds()
		// Events delayed by the wave are delivered just after it: a second
		// more belongs to it.
		_ = sleep(ctx, waveSettle)
		for _, f := range r.fleets {
			f.command("phase 2")
		}
		st := r.status()
		r.res.TokenAcks, r.res.BadAcks = st.Acks, st.BadAcks
	}()
	return done
}

// publish measures POST /v1/publish against XADD from the same process:
// Events of each, Concurrency in flight, the same entries (a user of the
// run, 200 B of data by default), the bridge's CPU over each phase.
func (r *runner) publish(ctx context.Context) error {
	o := r.o
	r.res.Concurrency = o.Concurrency
	pubURL := transportURL(o.WSURL, "/v1/publish")
	tag := `,` + string(runTag(r.run))
	pad := strings.Repeat("x", max(0, o.Size-len(`{"t":1732451234567890,"p":""}`)-len(tag)))
	data := func() string {
		return `{"t":` + strconv.FormatInt(time.Now().UnixMicro(), 10) + tag + `,"p":"` + pad + `"}`
	}
	to := func(i int) string { return "user:" + userName(r.run, i%1000) }
	lenBefore, _ := r.rdb.XLen(ctx, o.Stream).Result()

	tr := &http.Transport{MaxIdleConnsPerHost: o.Concurrency, MaxConnsPerHost: o.Concurrency}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var httpErr atomic.Int64
	var lastErr atomic.Value
	post := func(i int) error {
		body := `{"to":"` + to(i) + `","type":"bench","data":` + data() + `}`
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, pubURL, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+o.PublishKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(b, []byte(`{"id":"`)) {
			return fmt.Errorf("POST /v1/publish: %d %s", resp.StatusCode, bytes.TrimSpace(b))
		}
		return nil
	}
	xadd := func(i int) error {
		return r.rdb.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: []any{"to", to(i), "type", "bench", "data", data()}}).Err()
	}
	phase := func(name string, call func(int) error) (perS float64, hist latHist, cpuUS float64, err error) {
		before, _ := scrape(o.AdminURL)
		r.logf("publish: %d events by %s, %d in flight", o.Events, name, o.Concurrency)
		var next atomic.Int64
		hists := make([]latHist, o.Concurrency)
		start := time.Now()
		var wg sync.WaitGroup
		for w := range o.Concurrency {
			wg.Go(func() {
				for ctx.Err() == nil {
					i := int(next.Add(1)) - 1
					if i >= o.Events {
						return
					}
					t := time.Now()
					if err := call(i); err != nil {
						httpErr.Add(1)
						lastErr.Store(err.Error())
						continue
					}
					hists[w].add(time.Since(t).Microseconds())
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		for i := range hists {
			hist.merge(&hists[i])
		}
		// The bridge ingests what was appended: its CPU for the phase
		// includes that, in both phases alike.
		if err := waitIngested(ctx, r.rdb, o.Stream, 60*time.Second); err != nil {
			r.logf("%v", err)
		}
		after, _ := scrape(o.AdminURL)
		if hist.N > 0 {
			cpuUS = 1e6 * (after.cpu - before.cpu) / float64(hist.N)
		}
		return float64(hist.N) / elapsed.Seconds(), hist, cpuUS, ctx.Err()
	}
	perS, h, cpu, err := phase("POST /v1/publish", post)
	if err != nil {
		return err
	}
	r.res.HTTPAccepted, r.res.HTTPPerS, r.res.HTTPP50, r.res.HTTPP99, r.res.HTTPCPUus = h.N, perS, h.quantile(.5), h.quantile(.99), cpu
	r.res.HTTPErrors = httpErr.Load()
	if r.res.HTTPErrors > 0 {
		r.logf("publish: %d failed requests, the last: %v", r.res.HTTPErrors, lastErr.Load())
	}
	perS, h, cpu, err = phase("XADD", xadd)
	if err != nil {
		return err
	}
	r.res.XAddPerS, r.res.XAddP50, r.res.XAddP99, r.res.XAddCPUus = perS, h.quantile(.5), h.quantile(.99), cpu
	lenAfter, _ := r.rdb.XLen(ctx, o.Stream).Result()
	r.res.StreamGrowth = lenAfter - lenBefore
	r.res.Published = int(r.res.HTTPAccepted + h.N)
	return nil
}

// summarizeControl turns what the sets recorded into the control-plane
// scenarios' figures, once every client is closed.
func (r *runner) summarizeControl() {
	res := r.res
	switch r.o.Scenario {
	case "revoke":
		var user, group latHist
		groupOf := func(u int) int { return u / r.o.GroupSize }
		firstRevoked := (r.o.Clients+r.o.GroupSize-1)/r.o.GroupSize - r.o.RevokeGroups
		for _, c := range res.closeRecs {
			if c.User < 0 || c.User >= len(r.revokedAt) || r.revokedAt[c.User] == 0 || c.Code != 4001 {
				res.RevokeStray++
				continue
			}
			lat := c.AtUS - r.revokedAt[c.User]
			if r.revokedKind[c.User] == 'u' {
				user.add(lat)
				continue
			}
			group.add(lat)
			if g := groupOf(c.User) - firstRevoked; g >= 0 && g < len(res.RevokeGroupLast) {
				res.RevokeGroupLast[g] = max(res.RevokeGroupLast[g], float64(lat)/1000)
			}
		}
		res.RevokeUserN, res.RevokeUserP50, res.RevokeUserP99, res.RevokeUserMax = user.N, user.quantile(.5), user.quantile(.99), user.quantile(1)
		res.RevokeGroupN, res.RevokeGroupP50, res.RevokeGroupP99, res.RevokeGroupMax = group.N, group.quantile(.5), group.quantile(.99), group.quantile(1)
	case "refresh":
		for i := range res.phaseHist {
			h := &res.phaseHist[i]
			res.Phases = append(res.Phases, phaseStats{Name: phaseNames[i], N: h.N, P50: h.quantile(.5), P99: h.quantile(.99), Max: h.quantile(1)})
		}
	}
}

// controlRows adds the control-plane scenarios' rows to the table.
func (res *Result) controlRows(row func(k, v string)) {
	switch res.Scenario {
	case "revoke":
		row("groups", fmt.Sprintf("of %d clients", res.GroupSize))
		row("revoked one user at a time", fmt.Sprintf("%d closed with 4001: p50 %.2f, p99 %.2f, max %.2f ms (XADD → close read by the client)",
			res.RevokeUserN, res.RevokeUserP50, res.RevokeUserP99, res.RevokeUserMax))
		row("revoked by group", fmt.Sprintf("%d closed with 4001: p50 %.2f, p99 %.2f, max %.2f ms",
			res.RevokeGroupN, res.RevokeGroupP50, res.RevokeGroupP99, res.RevokeGroupMax))
		if len(res.RevokeGroupLast) > 0 {
			row("each group's last close", fmt.Sprintf("%.1f ms after its XADD", res.RevokeGroupLast))
		}
		row("closes expected / stray", fmt.Sprintf("%d / %d", res.RevokeExpected, res.RevokeStray))
	case "refresh":
		row("tokens refreshed in band", fmt.Sprintf("%d answered of %d (%d with another exp), in %.2fs (sent over %.1fs)", res.TokenAcks, res.Clients, res.BadAcks, res.WaveSeconds, res.Spread))
		for _, p := range res.Phases {
			row("live latency "+p.Name, fmt.Sprintf("p50 %.2f, p99 %.2f, max %.2f ms (%d deliveries)", p.P50, p.P99, p.Max, p.N))
		}
	case "publish":
		row("in flight", fmt.Sprint(res.Concurrency))
		row("POST /v1/publish", fmt.Sprintf("%d accepted (%.0f/s), p50 %.2f, p99 %.2f ms; %d failed; bridge CPU %.1f µs per event",
			res.HTTPAccepted, res.HTTPPerS, res.HTTPP50, res.HTTPP99, res.HTTPErrors, res.HTTPCPUus))
		row("XADD, same process", fmt.Sprintf("%.0f/s, p50 %.2f, p99 %.2f ms; bridge CPU %.1f µs per event (ingest alone)",
			res.XAddPerS, res.XAddP50, res.XAddP99, res.XAddCPUus))
		row("stream grew by", fmt.Sprint(res.StreamGrowth))
	}
}
