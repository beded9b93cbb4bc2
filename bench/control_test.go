package bench

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
)

// TestSSEEventsParse feeds the SSE parser what GET /events writes: the
// retry field, keep-alive comments, events with id lines, caught_up with
// its id, an event cut anywhere, and the close event whose code ends it.
func TestSSEEventsParse(t *testing.T) {
	var recv, caught atomic.Int64
	var sink latencySink
	c := &wsClient{user: 2, tag: runTag("R"), received: &recv, caught: &caught}
	stream := "retry: 2000\n\n" +
		":\n\n" +
		"data: {\"control\":\"caught_up\",\"last\":\"1-0\"}\n\n" +
		"id: 2-0\ndata: {\"id\":\"2-0\",\"type\":\"bench\",\"data\":{\"t\":1,\"u\":2,\"r\":\"R\",\"p\":\"x\"}}\n\n" +
		"id: 3-0\ndata: {\"id\":\"3-0\",\"type\":\"bench\",\"data\":{\"t\":1,\"r\":\"R\",\"p\":\"x\"}}\n\n" +
		"event: close\ndata: {\"code\":4001,\"reason\":\"revoked: bench\"}\n\n"
	for cut := 1; cut < len(stream); cut += 7 {
		*c = wsClient{user: 2, tag: runTag("R"), received: &recv, caught: &caught}
		recv.Store(0)
		caught.Store(0)
		var rest []byte
		code, ended := 0, false
		for _, chunk := range []string{stream[:cut], stream[cut:]} {
			buf := append(rest, chunk...)
			used, cd, ok := sseEvents(c, buf, 1, &sink)
			rest = append([]byte(nil), buf[used:]...)
			if !ok {
				code, ended = cd, true
				break
			}
		}
		if !ended || code != 4001 || c.unique != 2 || recv.Load() != 2 || caught.Load() != 1 || c.misdeliver != 0 {
			t.Fatalf("cut at %d: ended %v code %d unique %d received %d caught %d", cut, ended, code, c.unique, recv.Load(), caught.Load())
		}
	}
}

// TestGoroutineSSEReader reads the same stream through the goroutine
// client's reader.
func TestGoroutineSSEReader(t *testing.T) {
	var recv, caught atomic.Int64
	var sink latencySink
	c := &wsClient{user: 2, tag: runTag("R"), received: &recv, caught: &caught}
	done := make(chan struct{})
	c.readSSE(strings.NewReader("retry: 2000\n\nid: 2-0\ndata: {\"id\":\"2-0\",\"type\":\"b\",\"data\":{\"t\":1,\"r\":\"R\"}}\n\n"+
		"event: close\ndata: {\"code\":1001,\"reason\":\"shutdown\"}\n\n"), &sink, done)
	<-done
	if !c.serverClosed || c.closeCode != 1001 || c.unique != 1 {
		t.Fatalf("closed %v code %d unique %d", c.serverClosed, c.closeCode, c.unique)
	}
}

func runScenario(t *testing.T, o Options) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	o.Binary = e2e.Binary
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	res.WriteTable(&table)
	t.Logf("\n%s", table.String())
	return res
}

// TestBroadcastOverSSE: the broadcast scenario over GET /events, clients in
// this process and in a bench-client process, delivers everything once.
func TestBroadcastOverSSE(t *testing.T) {
	t.Parallel()
	res := runScenario(t, Options{Scenario: "broadcast", Transport: "sse", Clients: 100, Procs: 2, Rate: 50, Duration: 2 * time.Second, RawXRead: true})
	if res.Failed() || res.Delivered != res.Expected || res.Expected != 100*100 || res.Closed != 0 || res.LatencySamples != res.Delivered {
		t.Fatalf("lost %d duplicated %d delivered %d of %d, closed %d, samples %d", res.Lost, res.Duplicated, res.Delivered, res.Expected, res.Closed, res.LatencySamples)
	}
}

// TestRevokeScenario: single users and whole groups revoked over both
// transports; every revoked connection, and only those, closed with 4001.
func TestRevokeScenario(t *testing.T) {
	for _, tr := range []string{"ws", "sse"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			res := runScenario(t, Options{Scenario: "revoke", Transport: tr, Clients: 120, Procs: 2, GroupSize: 30, Revokes: 10, RevokeGroups: 2})
			if res.RevokeUserN != 10 || res.RevokeGroupN != 60 || res.RevokeStray != 0 || res.RevokeExpected != 70 ||
				res.CloseCodes[4001] != 70 || len(res.RevokeGroupLast) != 2 {
				t.Fatalf("user closes %d, group closes %d, stray %d, expected %d, codes %v, groups %v",
					res.RevokeUserN, res.RevokeGroupN, res.RevokeStray, res.RevokeExpected, res.CloseCodes, res.RevokeGroupLast)
			}
		})
	}
}

// TestRefreshScenario: every client refreshes its token in band during
// targeted events; every one is answered with the new exp, none closes,
// nothing is lost, and the live latency is split into the three phases.
func TestRefreshScenario(t *testing.T) {
	for _, spread := range []time.Duration{0, 500 * time.Millisecond} {
		t.Run(spread.String(), func(t *testing.T) {
			t.Parallel()
			testRefresh(t, spread)
		})
	}
}

func testRefresh(t *testing.T, spread time.Duration) {
	res := runScenario(t, Options{Scenario: "refresh", Clients: 100, Procs: 2, Rate: 200, Duration: 4 * time.Second, RefreshSpread: spread})
	if res.TokenAcks != 100 || res.BadAcks != 0 || res.Closed != 0 || res.Failed() || res.Delivered != res.Expected || len(res.Phases) != phaseCount {
		t.Fatalf("answers %d (%d wrong), closed %d, lost %d, delivered %d of %d, phases %v",
			res.TokenAcks, res.BadAcks, res.Closed, res.Lost, res.Delivered, res.Expected, res.Phases)
	}
	var n int64
	for _, p := range res.Phases {
		n += p.N
	}
	if n != res.LatencySamples || res.Phases[0].N == 0 || res.Phases[2].N == 0 || res.WaveSeconds < spread.Seconds()*0.9 {
		t.Fatalf("phases %v hold %d of %d samples", res.Phases, n, res.LatencySamples)
	}
}

// TestPublishScenario: every POST /v1/publish is accepted and both phases'
// entries reach the stream.
func TestPublishScenario(t *testing.T) {
	t.Parallel()
	res := runScenario(t, Options{Scenario: "publish", Events: 300, Concurrency: 4})
	if res.HTTPAccepted != 300 || res.HTTPErrors != 0 || res.StreamGrowth != 600 || res.HTTPPerS <= 0 || res.XAddPerS <= 0 {
		t.Fatalf("accepted %d, errors %d, stream grew %d, rates %.0f / %.0f", res.HTTPAccepted, res.HTTPErrors, res.StreamGrowth, res.HTTPPerS, res.XAddPerS)
	}
}

// TestScenarioOptions: bad combinations are refused naming the flag.
func TestScenarioOptions(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Scenario: "broadcast", Transport: "carrier-pigeon", Clients: 1, Events: 1}, "transport:"},
		{Options{Scenario: "refresh", Transport: "sse", Clients: 1, Events: 1}, "transport:"},
		{Options{Scenario: "revoke", Clients: 100, GroupSize: 10, RevokeGroups: 11}, "revoke-groups:"},
		{Options{Scenario: "revoke", Clients: 100, GroupSize: 10, RevokeGroups: 9, Revokes: 11}, "revokes:"},
		{Options{Scenario: "refresh", Clients: 1, Events: 1, WSURL: "ws://x/ws"}, "jwt-secret:"},
		{Options{Scenario: "publish", WSURL: "ws://x/ws"}, "publish-key:"},
		{Options{Scenario: "refresh", Clients: 1, Events: 1, Duration: 4 * time.Second, RefreshSpread: 2 * time.Second}, "refresh-spread:"},
	} {
		if err := tc.o.validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %s…", tc.o, err, tc.want)
		}
	}
}

// TestPollTransport: broadcast and targeted over GET /poll, clients in
// this process and a bench-client process, deliver everything once; the
// scenarios a poll cannot run are refused.
func TestPollTransport(t *testing.T) {
	for _, sc := range []string{"broadcast", "targeted"} {
		t.Run(sc, func(t *testing.T) {
			t.Parallel()
			res := runScenario(t, Options{Scenario: sc, Transport: "poll", Clients: 50, Procs: 2, Rate: 100, Duration: 2 * time.Second})
			if res.Failed() || res.Delivered != res.Expected || res.Expected == 0 || res.Closed != 0 {
				t.Fatalf("lost %d duplicated %d misdelivered %d delivered %d of %d, closed %d",
					res.Lost, res.Duplicated, res.Misdelivered, res.Delivered, res.Expected, res.Closed)
			}
		})
	}
	for _, sc := range []string{"mixed", "revoke"} {
		o := Options{Scenario: sc, Transport: "poll", Clients: 10, Events: 1, Revokes: 1}
		if err := o.validate(); err == nil || !strings.HasPrefix(err.Error(), "transport:") {
			t.Errorf("%s over poll: %v", sc, err)
		}
	}
}
