package wspool

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/notifybridge/notifybridge/bridge"
)

func TestRequestKind(t *testing.T) {
	for _, tc := range []struct {
		line string
		want connKind
	}{
		{"GET /ws HTTP/1.1", kindWS},
		{"GET /ws?user=a HTTP/1.1", kindWS},
		{"GET /events HTTP/1.1", kindSSE},
		{"GET /events?last_event_id=1-0 HTTP/1.1", kindSSE},
		{"GET /poll?user=a HTTP/1.1", kindPoll},
		{"GET /eventsx HTTP/1.1", kindOther},
		{"GET /polls HTTP/1.1", kindOther},
		{"POST /poll HTTP/1.1", kindOther},
		{"GET /events", kindOther},
		{"GET /", kindOther},
	} {
		if got := requestKind([]byte(tc.line)); got != tc.want {
			t.Errorf("%q: %d, want %d", tc.line, got, tc.want)
		}
	}
}

func TestParseStreamHead(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		ok         bool
		want       hsState
	}{
		{"full", "GET /events?user=a HTTP/1.1\r\nHost: h:1\r\nOrigin: http://h:1\r\nAuthorization: Bearer t\r\nCookie: a=1\r\nCookie: b=2\r\nlast-event-id:  5-0 \r\n\r\n", true,
			hsState{uri: "/events?user=a", host: "h:1", origin: "http://h:1", authz: "Bearer t", cookie: "a=1; b=2", lastEventID: "5-0"}},
		{"http/1.0", "GET /poll HTTP/1.0\r\n\r\n", true, hsState{uri: "/poll"}},
		{"no end", "GET /poll HTTP/1.1\r\nHost: h\r\n", false, hsState{}},
		{"bad method", "POST /poll HTTP/1.1\r\n\r\n", false, hsState{}},
		{"no proto", "GET /poll\r\n\r\n", false, hsState{}},
		{"no colon", "GET /poll HTTP/1.1\r\nHost h\r\n\r\n", false, hsState{}},
		{"space in name", "GET /poll HTTP/1.1\r\nHost : h\r\n\r\n", false, hsState{}},
		{"no line end", "GET /poll HTTP/1.1", false, hsState{}},
	} {
		var st hsState
		err := parseStreamHead([]byte(tc.head), &st)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if tc.ok && st != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, st, tc.want)
		}
	}
}

func wsFrame(payload string) []byte { return bridge.AppendTextFrame(nil, []byte(payload)) }

func TestFramePayloadAndID(t *testing.T) {
	long := `{"id":"7-1","type":"t","data":"` + strings.Repeat("x", 70000) + `"}`
	for _, tc := range []struct {
		payload, id string
		control     bool
	}{
		{`{"id":"1700000000000-3","type":"t","data":1}`, "1700000000000-3", false},
		{`{"id":"5-0","type":"t","data":"` + strings.Repeat("y", 200) + `"}`, "5-0", false},
		{long, "7-1", false},
		{`{"control":"caught_up","last":"9-2"}`, "9-2", true},
		{`{"control":"cursor","last":"10-0"}`, "10-0", true},
		{`{"control":"gap","requested":"1-0","oldest":"2-0"}`, "", false},
		{`{"control":"ping"}`, "", false},
	} {
		p := framePayload(wsFrame(tc.payload))
		if string(p) != tc.payload {
			t.Fatalf("payload of a %d-byte frame: %.40q", len(tc.payload), p)
		}
		id, control := frameID(p)
		if string(id) != tc.id || control != tc.control {
			t.Errorf("%.40s: id %q control %v, want %q %v", tc.payload, id, control, tc.id, tc.control)
		}
	}
	for _, f := range [][]byte{nil, {0x81}, {0x81, 126, 0}, {0x81, 127, 0, 0}} {
		if p := framePayload(f); p != nil {
			t.Errorf("short frame %x: payload %q", f, p)
		}
	}
	if got := framePayload(heartbeatFrame); string(got) != `{"control":"ping"}` {
		t.Errorf("heartbeat frame payload %q", got)
	}
}

func TestAppendSSE(t *testing.T) {
	frames := [][]byte{
		wsFrame(`{"id":"1-0","type":"t","data":{"a":"b"}}`),
		wsFrame(`{"control":"gap","requested":"0-1","oldest":"1-0"}`),
		wsFrame(`{"control":"caught_up","last":"1-0"}`),
	}
	got := bytes.Join(appendSSE(nil, frames), nil)
	want := "id: 1-0\ndata: {\"id\":\"1-0\",\"type\":\"t\",\"data\":{\"a\":\"b\"}}\n\n" +
		"data: {\"control\":\"gap\",\"requested\":\"0-1\",\"oldest\":\"1-0\"}\n\n" +
		"id: 1-0\ndata: {\"control\":\"caught_up\",\"last\":\"1-0\"}\n\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if ev := string(sseCloseEvent(1008, "token expired")); ev != "event: close\ndata: {\"code\":1008,\"reason\":\"token expired\"}\n\n" {
		t.Fatalf("close event %q", ev)
	}
	if !bytes.HasSuffix(sseHead, []byte("\r\n\r\nretry: 2000\n\n")) {
		t.Fatalf("head %q", sseHead)
	}
}

func TestPollAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames []string
		from   string
		body   string
		ready  bool
		atOnce bool // ready with atOnce (no resume position, or wait=0)
	}{
		{"empty", nil, "3-0", `{"frames":[],"last":"3-0"}`, false, false},
		{"caught up only", []string{`{"control":"caught_up","last":"4-0"}`}, "", `{"frames":[{"control":"caught_up","last":"4-0"}],"last":"4-0"}`, false, true},
		{"events", []string{`{"id":"5-0","type":"t","data":1}`, `{"id":"6-0","type":"t","data":[2]}`, `{"control":"caught_up","last":"6-0"}`}, "4-0",
			`{"frames":[{"id":"5-0","type":"t","data":1},{"id":"6-0","type":"t","data":[2]},{"control":"caught_up","last":"6-0"}],"last":"6-0"}`, true, true},
		{"cursor only", []string{`{"control":"cursor","last":"4-0"}`}, "2-0", `{"frames":[{"control":"cursor","last":"4-0"}],"last":"4-0"}`, false, false},
		{"gap", []string{`{"control":"gap","requested":"1-0","oldest":"2-0"}`}, "1-0", `{"frames":[{"control":"gap","requested":"1-0","oldest":"2-0"}],"last":"1-0"}`, false, false},
		{"gap and caught_up", []string{`{"control":"gap","requested":"1-0","oldest":"2-0"}`, `{"control":"caught_up","last":"3-0"}`}, "1-0",
			`{"frames":[{"control":"gap","requested":"1-0","oldest":"2-0"},{"control":"caught_up","last":"3-0"}],"last":"3-0"}`, true, true},
		{"caught_up then gap", []string{`{"control":"caught_up","last":"3-0"}`, `{"control":"gap","requested":"1-0","oldest":"2-0"}`}, "1-0",
			`{"frames":[{"control":"caught_up","last":"3-0"},{"control":"gap","requested":"1-0","oldest":"2-0"}],"last":"3-0"}`, false, true},
	} {
		var frames [][]byte
		for _, f := range tc.frames {
			frames = append(frames, wsFrame(f))
		}
		if got := pollReady(frames, false); got != tc.ready {
			t.Errorf("%s: ready %v", tc.name, got)
		}
		if got := pollReady(frames, true); got != tc.atOnce {
			t.Errorf("%s: ready at once %v", tc.name, got)
		}
		bufs := pollAnswer([][]byte{[]byte("before")}, frames, tc.from)
		if string(bufs[0]) != "before" {
			t.Fatalf("%s: changed what was there", tc.name)
		}
		resp := string(bytes.Join(bufs[1:], nil))
		head, body, _ := strings.Cut(resp, "\r\n\r\n")
		if body != tc.body {
			t.Errorf("%s: body %s, want %s", tc.name, body, tc.body)
		}
		if !strings.HasSuffix(head, "Content-Length: "+strconv.Itoa(len(body))) || !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\nContent-Type: application/json") {
			t.Errorf("%s: head %q", tc.name, head)
		}
	}
}

// FuzzStreamHead: any head parses or is refused, never panics, and a
// parsed one passes the same checks as a /ws handshake's.
func FuzzStreamHead(f *testing.F) {
	f.Add([]byte("GET /events?user=a&groups=x HTTP/1.1\r\nHost: h:1\r\nOrigin: http://h:1\r\nLast-Event-ID: 1-0\r\n\r\n"))
	f.Add([]byte("GET /poll?token=a%zz HTTP/1.1\r\nHost: h\r\nCookie: notifybridge_token=x\r\n\r\n"))
	f.Add([]byte("GET /events HTTP/1.1\r\nHost h\r\n\r\n"))
	h := &Server{cfg: Config{Auth: NewNoneAuthenticator(), ValidateName: bridge.ValidateName, Accept: func(*Request) (Source, error) { return &testSource{}, nil }}}
	h.cfg.setDefaults()
	h.perIP = map[ipKey]int{}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := hsState{kind: kindPoll}
		if parseStreamHead(data, &st) != nil {
			return
		}
		if !bytes.Contains(data, []byte(st.uri)) {
			t.Fatalf("uri %q not from the head", st.uri)
		}
		var ip ipKey
		c, slot, r := h.decide(&st, nil, ip)
		if slot {
			h.releaseSlot(ip)
		}
		if r != nil {
			if strings.ContainsAny(oneLine(r.reason), "\r\n") {
				t.Fatalf("reason %q", r.reason)
			}
			return
		}
		c.src.Closed()
		if c.io == nil || c.io.poll == nil {
			t.Fatal("poll without its state")
		}
	})
}

// BenchmarkSSEWrite: rendering a Pull's frames as SSE costs no allocation
// and copies no payload.
func BenchmarkSSEWrite(b *testing.B) {
	var frames [][]byte
	for i := 0; i < 16; i++ {
		frames = append(frames, wsFrame(`{"id":"1700000000000-`+strconv.Itoa(i)+`","type":"alarm.x","data":{"fiber":"F-12","km":3.2}}`))
	}
	w := newWorker()
	b.ReportAllocs()
	for b.Loop() {
		bufs := append(w.bufs[:0], frames...)
		bufs = w.toSSE(bufs, 0)
		if len(bufs) != 5*len(frames) {
			b.Fatal(len(bufs))
		}
		clear(bufs)
		w.bufs = bufs[:0]
	}
}

// BenchmarkPollAnswer: one answer of 16 frames; its head is the one
// allocation besides the frame list.
func BenchmarkPollAnswer(b *testing.B) {
	var frames [][]byte
	for i := 0; i < 16; i++ {
		frames = append(frames, wsFrame(`{"id":"1700000000000-`+strconv.Itoa(i)+`","type":"alarm.x","data":{"fiber":"F-12","km":3.2}}`))
	}
	bufs := make([][]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		bufs = pollAnswer(bufs[:0], frames, "")
	}
}

func TestFramesIn(t *testing.T) {
	frames := [][]byte{wsFrame(`{"id":"1-0","type":"t","data":1}`), wsFrame(`{"control":"caught_up","last":"1-0"}`)}
	sse := &Conn{kind: kindSSE}
	bufs := append(appendSSE(nil, frames), sseKeepAlive, sseCloseEvent(1001, "x"))
	if n := sse.framesIn(bufs); n != 4 {
		t.Errorf("SSE: %d frames, want 4", n)
	}
	if n := (&Conn{kind: kindPoll}).framesIn(pollAnswer(nil, frames, "")); n != 2 {
		t.Errorf("poll: %d frames, want 2", n)
	}
	if n := (&Conn{}).framesIn(frames); n != 2 {
		t.Errorf("ws: %d frames, want 2", n)
	}
}
