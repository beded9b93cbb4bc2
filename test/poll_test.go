package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

type pollResult struct {
	status int
	header http.Header
	body   string
	Frames []json.RawMessage `json:"frames"`
	Last   string            `json:"last"`
}

// doPoll makes one GET /poll and reads the whole answer.
func doPoll(t testing.TB, addr, query string, hdr ...string) pollResult {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /poll?" + query + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	for i := 0; i+1 < len(hdr); i += 2 {
		req += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("poll body: %v", err)
	}
	r := pollResult{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if r.status == 200 {
		if resp.ContentLength != int64(len(b)) {
			t.Fatalf("Content-Length %d, body %d", resp.ContentLength, len(b))
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("poll answer %q: %v", b, err)
		}
	}
	return r
}

// events are the event frames' ids of a poll answer.
func (r pollResult) events() []string {
	var ids []string
	for _, f := range r.Frames {
		var e struct{ ID string }
		if bytes.HasPrefix(f, []byte(`{"id":"`)) && json.Unmarshal(f, &e) == nil {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// pollUntil polls from last until want arrived (in order), as a client loop
// would; it returns the last id.
func pollUntil(t testing.TB, addr, query, last string, want []string) string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		q := query
		if last != "" {
			q += "&last_event_id=" + last
		}
		r := doPoll(t, addr, q)
		if r.status != 200 {
			t.Fatalf("poll: %d %s", r.status, r.body)
		}
		got = append(got, r.events()...)
		last = r.Last
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("polled %v, want %v", got, want)
	}
	return last
}

func TestPoll(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--poll-timeout", "3s"}})
	wsc := e2e.Dial(t, n.Listen, "user=alice&groups=ops", nil)
	wsc.WaitControl("caught_up", 5*time.Second)

	// No resume position (a client's first poll): answered at once with
	// caught_up, naming the head, so the client learns its position.
	start := time.Now()
	r := doPoll(t, n.Listen, "user=alice&groups=ops")
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || len(r.events()) != 0 {
		t.Fatalf("first poll: %d %v %s", r.status, r.header, r.body)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("poll without a position answered after %v, want at once", el)
	}
	head := r.Last
	if ms, seq, ok := strings.Cut(head, "-"); !ok || ms == "" || seq == "" || r.body != `{"frames":[{"control":"caught_up","last":"`+head+`"}],"last":"`+head+`"}` {
		t.Fatalf("first poll: %s", r.body)
	}
	// wait=0 with a position at the head: the same, at once.
	start = time.Now()
	if r = doPoll(t, n.Listen, "user=alice&groups=ops&wait=0&last_event_id="+head); r.Last != head || len(r.Frames) != 1 || time.Since(start) > 2*time.Second {
		t.Fatalf("wait=0 at the head: %s after %v", r.body, time.Since(start))
	}
	// At the head with a position: nothing for poll_timeout, then an answer
	// naming the head.
	start = time.Now()
	r = doPoll(t, n.Listen, "user=alice&groups=ops&last_event_id="+head)
	if r.status != 200 || len(r.events()) != 0 || r.Last != head {
		t.Fatalf("empty poll: %d %v %s", r.status, r.header, r.body)
	}
	if el := time.Since(start); el < 2900*time.Millisecond {
		t.Fatalf("poll at the head answered after %v, before poll_timeout", el)
	}

	a1 := xadd(t, rdb, "notifications", "to", "user:alice", "type", "alarm.x", "data", `{"n":1}`)
	xadd(t, rdb, "notifications", "to", "user:bob", "data", `"b"`)
	g1 := xadd(t, rdb, "notifications", "to", "group:ops", "type", "info", "data", `[1,"ü"]`)
	all := xadd(t, rdb, "notifications", "to", "*", "data", `null`)
	wsc.WaitEvents([]string{a1, g1, all}, 5*time.Second)

	// Resume from the earlier answer's last: everything since, byte-exact.
	r = doPoll(t, n.Listen, "user=alice&groups=ops&last_event_id="+head)
	if got := r.events(); strings.Join(got, ",") != strings.Join([]string{a1, g1, all}, ",") {
		t.Fatalf("poll from %s: %v (%s)", head, got, r.body)
	}
	if r.Last != all {
		t.Fatalf("last %q, want %s", r.Last, all)
	}
	var wsRaw, pollRaw []string
	for _, f := range wsc.Snapshot() {
		if strings.HasPrefix(f.Raw, `{"id":"`) {
			wsRaw = append(wsRaw, f.Raw)
		}
	}
	for _, f := range r.Frames {
		if bytes.HasPrefix(f, []byte(`{"id":"`)) {
			pollRaw = append(pollRaw, string(f))
		}
	}
	if strings.Join(wsRaw, "\n") != strings.Join(pollRaw, "\n") {
		t.Fatalf("poll frames differ from /ws:\n%v\n%v", pollRaw, wsRaw)
	}
	if !strings.Contains(r.body, `{"control":"caught_up","last":"`+all+`"}`) {
		t.Fatalf("no caught_up in %s", r.body)
	}
	// The header, since and types resume too; the parameter wins.
	if got := doPoll(t, n.Listen, "user=alice&groups=ops", "Last-Event-ID", g1).events(); strings.Join(got, ",") != all {
		t.Fatalf("Last-Event-ID: %v", got)
	}
	if got := doPoll(t, n.Listen, "user=alice&groups=ops&since="+strings.Split(a1, "-")[0]).events(); len(got) != 3 {
		t.Fatalf("since: %v", got)
	}
	if got := doPoll(t, n.Listen, "user=alice&groups=ops&types=info&last_event_id="+head).events(); strings.Join(got, ",") != g1 {
		t.Fatalf("types: %v", got)
	}
	// A poll loop sees every event once; a waiting poll is answered when
	// one arrives, long before poll_timeout.
	last := all
	done := make(chan pollResult, 1)
	go func() { done <- doPoll(t, n.Listen, "user=alice&groups=ops&last_event_id="+last) }()
	time.Sleep(200 * time.Millisecond) // let it wait; only speeds the test up
	b2 := xadd(t, rdb, "notifications", "to", "*", "data", `2`)
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("waiting poll not answered")
	}
	if got := r.events(); strings.Join(got, ",") != b2 || r.Last != b2 {
		t.Fatalf("waiting poll: %v last %s", got, r.Last)
	}
	b3 := xadd(t, rdb, "notifications", "to", "user:alice", "data", `3`)
	pollUntil(t, n.Listen, "user=alice&groups=ops", b2, []string{b3})

	// Drain answers a waiting poll at once.
	start = time.Now()
	var took time.Duration
	go func() {
		r := doPoll(t, n.Listen, "user=alice&groups=ops&last_event_id="+b3)
		took = time.Since(start)
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	_ = n.Stop(20 * time.Second)
	select {
	case r = <-done:
		if r.status != 200 || r.Last != b3 || took > 2500*time.Millisecond {
			t.Fatalf("drained poll: %d %s after %v", r.status, r.body, took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("drain did not answer the waiting poll")
	}
}
