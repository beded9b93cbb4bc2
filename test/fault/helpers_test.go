package fault

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
)

// resumer is one logical user session across connections, like the browser
// SDK: it stores the newest id it was told about (event, caught_up or
// cursor) and resumes from it on every new connection.
type resumer struct {
	t      testing.TB
	user   string
	groups []string // sent as &groups=; events for them count as its own
	query  string   // extra query parameters, e.g. "&types=a.*"
	conns  []*e2e.Client
}

func newResumer(t testing.TB, user string) *resumer {
	return &resumer{t: t, user: user}
}

// last is the id to resume from: the newest id any finished or current
// connection reported.
func (r *resumer) last() string {
	for i := len(r.conns) - 1; i >= 0; i-- {
		fs := r.conns[i].Snapshot()
		for j := len(fs) - 1; j >= 0; j-- {
			if fs[j].ID != "" {
				return fs[j].ID
			}
			if fs[j].Last != "" {
				return fs[j].Last
			}
		}
	}
	return ""
}

// connect opens a new connection to addr, resuming from last, and closes the
// previous one first (so ids received by it are final).
func (r *resumer) connect(addr string) error {
	if n := len(r.conns); n > 0 {
		r.conns[n-1].Close()
	}
	q := "user=" + r.user + r.query
	if len(r.groups) > 0 {
		q += "&groups=" + strings.Join(r.groups, ",")
	}
	if l := r.last(); l != "" {
		q += "&last_event_id=" + l
	}
	c, err := e2e.TryDial(r.t, addr, q, nil)
	if err != nil {
		return err
	}
	r.conns = append(r.conns, c)
	return nil
}

// mustConnect retries connect until it succeeds (a node may be starting).
func (r *resumer) mustConnect(addr string, timeout time.Duration) {
	r.t.Helper()
	e2e.WaitFor(r.t, timeout, "connect "+r.user, func() error { return r.connect(addr) })
}

// check compares what the session received with want (stream order): every
// connection must be strictly increasing (no duplicate, no reordering) and
// the union must be exactly want when exact, or hold want when not (after a
// failover the client may also hold entries the new master lost).
func (r *resumer) check(want []string, exact bool) error {
	got := map[string]int{}
	for i, c := range r.conns {
		prev := ""
		for _, id := range c.Events() {
			if prev != "" && !idLess(prev, id) {
				return fmt.Errorf("%s connection %d: %s after %s (duplicate or out of order)", r.user, i, id, prev)
			}
			prev = id
			got[id]++
		}
	}
	missing := 0
	first := ""
	for _, id := range want {
		if got[id] == 0 {
			if missing == 0 {
				first = id
			}
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%s: %d of %d events missing (first %s); %d connections", r.user, missing, len(want), first, len(r.conns))
	}
	if exact {
		n := 0
		for _, k := range got {
			n += k
		}
		if n != len(want) {
			return fmt.Errorf("%s: received %d events, want exactly %d", r.user, n, len(want))
		}
	}
	return nil
}

// idLess orders stream ids <ms>-<seq>.
func idLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	ami, _ := strconv.ParseUint(am, 10, 64)
	bmi, _ := strconv.ParseUint(bm, 10, 64)
	if ami != bmi {
		return ami < bmi
	}
	asi, _ := strconv.ParseUint(as, 10, 64)
	bsi, _ := strconv.ParseUint(bs, 10, 64)
	return asi < bsi
}

// expected reads the stream and returns, per user, the ids addressed to
// its session (user:<u>, one of its groups, or *; an entry naming it twice
// counts once), in stream order, leaving out the entries <stream>:dead
// holds (bad entries are never delivered): the ground truth after a fault.
func expected(t testing.TB, rdb redis.UniversalClient, stream string, rs []*resumer) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var msgs, dead []redis.XMessage
	e2e.WaitFor(t, 10*time.Second, "XRANGE", func() error {
		var err error
		if msgs, err = rdb.XRange(context.Background(), stream, "-", "+").Result(); err != nil {
			return err
		}
		dead, err = rdb.XRange(context.Background(), stream+":dead", "-", "+").Result()
		return err
	})
	deadIDs := map[string]bool{}
	for _, d := range dead {
		if id, ok := d.Values["id"].(string); ok {
			deadIDs[id] = true
		}
	}
	byUser := map[string][]*resumer{}
	byGroup := map[string][]*resumer{}
	for _, r := range rs {
		byUser[r.user] = append(byUser[r.user], r)
		for _, g := range r.groups {
			byGroup[g] = append(byGroup[g], r)
		}
	}
	for _, m := range msgs {
		if deadIDs[m.ID] {
			continue
		}
		to, _ := m.Values["to"].(string)
		hit := map[*resumer]bool{}
		for _, item := range strings.Split(to, ",") {
			switch {
			case item == "*":
				for _, r := range rs {
					hit[r] = true
				}
			case strings.HasPrefix(item, "user:"):
				for _, r := range byUser[item[len("user:"):]] {
					hit[r] = true
				}
			case strings.HasPrefix(item, "group:"):
				for _, r := range byGroup[item[len("group:"):]] {
					hit[r] = true
				}
			}
		}
		for r := range hit {
			out[r.user] = append(out[r.user], m.ID)
		}
	}
	return out
}

// checkGaps applies the contract's gap rule to every gap frame the sessions
// got: a gap is right only when entries after the requested id are gone from
// the stream (Redis's max-deleted-entry-id is past it) and the stream holds
// none between requested and oldest (those the node could still deliver).
func checkGaps(t testing.TB, rdb redis.UniversalClient, stream string, rs []*resumer) int {
	t.Helper()
	gaps := 0
	ctx := context.Background()
	for _, r := range rs {
		for i, c := range r.conns {
			for _, f := range c.Snapshot() {
				if f.Control != "gap" {
					continue
				}
				gaps++
				info, err := rdb.XInfoStream(ctx, stream).Result()
				if err != nil {
					t.Fatalf("XINFO STREAM: %v", err)
				}
				if !idLess(f.Requested, info.MaxDeletedEntryID) {
					t.Errorf("%s connection %d: gap %s, but nothing after %s was ever deleted from the stream (max-deleted-entry-id %s)",
						r.user, i, f.Raw, f.Requested, info.MaxDeletedEntryID)
					continue
				}
				held, err := rdb.XRangeN(ctx, stream, "("+f.Requested, "+", 1).Result()
				if err == nil && len(held) > 0 && idLess(held[0].ID, f.Oldest) {
					t.Errorf("%s connection %d: gap %s, but the stream still holds %s", r.user, i, f.Raw, held[0].ID)
				}
			}
		}
	}
	return gaps
}

// checkAll waits until every session holds what the stream says it should,
// then checks every gap frame against the contract's rule.
func checkAll(t testing.TB, rdb redis.UniversalClient, stream string, rs []*resumer, exact bool, timeout time.Duration) {
	t.Helper()
	want := expected(t, rdb, stream, rs)
	total := 0
	for _, ids := range want {
		total += len(ids)
	}
	e2e.WaitFor(t, timeout, "every session has every event for it", func() error {
		var errs []error
		for _, r := range rs {
			if err := r.check(want[r.user], exact); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	gaps := checkGaps(t, rdb, stream, rs)
	t.Logf("%d sessions hold all %d deliveries the stream says they should; %d gap frames", len(rs), total, gaps)
}

// producer appends events at a steady rate to random users among its
// sessions, with one in twenty a broadcast; with groups it mixes in the
// other shapes of to (a group, several recipients in one entry, recipients
// nobody connected is). Failed appends (Redis down) are retried later; the
// stream, not the producer, is the ground truth.
type producer struct {
	rdb    redis.UniversalClient
	stream string
	users  []string
	groups []string
	rate   int
	wait   int // when > 0, WAIT for this many replicas after each append
	ok     atomic.Int64
	failed atomic.Int64
	stop   chan struct{}
	done   chan struct{}
}

// startProducer appends rate events/s until Stop; with waitReplicas > 0 each
// append is followed by WAIT for that many replicas.
func startProducer(t testing.TB, rdb redis.UniversalClient, stream string, users []string, rate, waitReplicas int) *producer {
	p := &producer{rdb: rdb, stream: stream, users: users, rate: rate, wait: waitReplicas,
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	t.Cleanup(p.Stop)
	return p
}

// startMixedProducer is startProducer with every shape of to: users,
// groups, *, multi-recipient entries and entries for nobody connected.
func startMixedProducer(t testing.TB, rdb redis.UniversalClient, stream string, users, groups []string, rate int) *producer {
	p := &producer{rdb: rdb, stream: stream, users: users, groups: groups, rate: rate,
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	t.Cleanup(p.Stop)
	return p
}

// to picks the recipients of the seq-th append.
func (p *producer) to(seq int) string {
	user := func() string { return "user:" + p.users[rand.IntN(len(p.users))] }
	if seq%20 == 0 {
		return "*"
	}
	if len(p.groups) == 0 {
		return user()
	}
	group := func() string { return "group:" + p.groups[rand.IntN(len(p.groups))] }
	switch seq % 5 {
	case 1:
		return group()
	case 2: // several recipients, maybe the same session twice
		return user() + "," + group() + "," + user()
	case 3: // nobody connected
		return "user:nobody-" + strconv.Itoa(seq) + ",group:empty"
	}
	return user()
}

func (p *producer) run() {
	defer close(p.done)
	// Appends go out in small batches per tick so the rate holds under -race.
	const tick = 20 * time.Millisecond
	per := max(1, p.rate*int(tick)/int(time.Second))
	tk := time.NewTicker(tick)
	defer tk.Stop()
	seq := 0
	for {
		select {
		case <-p.stop:
			return
		case <-tk.C:
		}
		for range per {
			seq++
			to := p.to(seq)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			var err error
			if p.wait > 0 {
				// WAIT returns how many replicas hold the writes of its own
				// connection, so it rides in one pipeline with the XADD; a
				// producer that needs the entry to survive a failover retries
				// or alerts when it is short (publisher.WaitReplicas). Here
				// the count is only observed.
				var c redis.Cmdable = p.rdb
				if cc, ok := p.rdb.(*redis.ClusterClient); ok {
					// WAIT has no key: send both to the stream's shard.
					if c, err = cc.MasterForKey(ctx, p.stream); err != nil {
						cancel()
						p.failed.Add(1)
						break
					}
				}
				pipe := c.Pipeline()
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: p.stream, Values: []any{"to", to, "type", "load", "data", strconv.Itoa(seq)}})
				pipe.Do(ctx, "WAIT", p.wait, 200)
				_, err = pipe.Exec(ctx)
			} else {
				err = p.rdb.XAdd(ctx, &redis.XAddArgs{Stream: p.stream, Values: []any{"to", to, "type", "load", "data", strconv.Itoa(seq)}}).Err()
			}
			cancel()
			if err != nil {
				p.failed.Add(1)
				break
			}
			p.ok.Add(1)
		}
	}
}

// Stop ends the producer and waits for it.
func (p *producer) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// metrics scrapes the admin /metrics endpoint into series → value, keyed as
// written (`name` or `name{label="v"}`).
func metrics(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, val := line[:i], line[i+1:]
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

func metric(t testing.TB, addr, name string) float64 {
	t.Helper()
	var v float64
	e2e.WaitFor(t, 10*time.Second, "scrape "+name, func() error {
		m, err := metrics(addr)
		if err != nil {
			return err
		}
		var ok bool
		if v, ok = m[name]; !ok {
			return fmt.Errorf("no %s", name)
		}
		return nil
	})
	return v
}

// readyStatus is the HTTP status of /readyz (0 when unreachable).
func readyStatus(admin string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitGoroutinesBack waits until go_goroutines is within slack of base.
func waitGoroutinesBack(t testing.TB, admin string, base float64, slack float64, timeout time.Duration) float64 {
	t.Helper()
	var now float64
	e2e.WaitFor(t, timeout, "goroutines back to baseline", func() error {
		m, err := metrics(admin)
		if err != nil {
			return err
		}
		now = m["go_goroutines"]
		if now > base+slack {
			return fmt.Errorf("go_goroutines %v, baseline %v (+%v allowed)", now, base, slack)
		}
		return nil
	})
	return now
}

// users returns n user names with a prefix.
func users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// percentile of durations (p in 0..100).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// sessions connects one resumer per user to addr and waits until each is live.
func sessions(t testing.TB, addr string, names []string) []*resumer {
	t.Helper()
	return groupSessions(t, addr, names, nil)
}

// groupSessions is sessions where user i is also in groups[i%len(groups)]
// and, every third one, in the next group too.
func groupSessions(t testing.TB, addr string, names, groups []string) []*resumer {
	t.Helper()
	rs := make([]*resumer, len(names))
	for i, u := range names {
		rs[i] = newResumer(t, u)
		if len(groups) > 0 {
			rs[i].groups = []string{groups[i%len(groups)]}
			if i%3 == 0 {
				rs[i].groups = append(rs[i].groups, groups[(i+1)%len(groups)])
			}
		}
	}
	for _, r := range rs {
		r.mustConnect(addr, 10*time.Second)
	}
	for _, r := range rs {
		r.conns[len(r.conns)-1].WaitControl("caught_up", 10*time.Second)
	}
	return rs
}

// finalBroadcast appends one event for everyone once the fault is over, so
// every session has something to receive after it.
func finalBroadcast(t testing.TB, rdb redis.UniversalClient, stream string) string {
	t.Helper()
	var id string
	e2e.WaitFor(t, 20*time.Second, "final broadcast", func() error {
		var err error
		id, err = rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream,
			Values: []any{"to", "*", "type", "final", "data", `"final"`}}).Result()
		return err
	})
	return id
}

// connsKept fails the test when any session's current connection ended.
func connsKept(t testing.TB, rs []*resumer, during string) {
	t.Helper()
	for _, r := range rs {
		c := r.conns[len(r.conns)-1]
		select {
		case <-c.Done():
			t.Fatalf("%s: connection dropped %s (code %d)", r.user, during, c.Code())
		default:
		}
	}
}
