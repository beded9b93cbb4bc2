package wspool

// The plain-HTTP transports beside /ws: GET /events (Server-Sent Events) and
// GET /poll (long-poll). They share the handshake's checks (decide), the
// pool's registration, timers and pull-based writes; only the bytes around
// each frame differ. The window's frames are WebSocket text frames: both
// transports write the payload slice after the WebSocket header, never a
// copy of it.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
)

// connKind is the transport of a connection; the zero value is WebSocket.
type connKind uint8

const (
	kindWS    connKind = iota // GET /ws
	kindSSE                   // GET /events
	kindPoll                  // GET /poll
	kindOther                 // anything else: the HTTP handler
)

// requestKind routes a request line: "GET /ws", "GET /events" or
// "GET /poll", each followed by a space or a query.
func requestKind(line []byte) connKind {
	for _, r := range [...]struct {
		prefix string
		kind   connKind
	}{{"GET /ws", kindWS}, {"GET /events", kindSSE}, {"GET /poll", kindPoll}} {
		if rest, ok := bytes.CutPrefix(line, []byte(r.prefix)); ok && len(rest) > 0 && (rest[0] == ' ' || rest[0] == '?') {
			return r.kind
		}
	}
	return kindOther
}

var errBadHead = errors.New("malformed request")

// parseStreamHead reads what decide needs of a plain HTTP request head
// (request line and header lines, ending with the blank line): the URI and
// the headers hsState collects. gobwas parses /ws heads; these are not
// upgrades.
func parseStreamHead(head []byte, st *hsState) error {
	line, rest, ok := bytes.Cut(head, []byte("\r\n"))
	if !ok {
		return errBadHead
	}
	method, rl, ok1 := bytes.Cut(line, []byte(" "))
	uri, proto, ok2 := bytes.Cut(rl, []byte(" "))
	if !ok1 || !ok2 || string(method) != "GET" || len(uri) == 0 || !bytes.HasPrefix(proto, []byte("HTTP/1.")) {
		return errBadHead
	}
	st.uri = string(uri)
	for len(rest) > 0 {
		var l []byte
		if l, rest, ok = bytes.Cut(rest, []byte("\r\n")); !ok {
			return errBadHead
		}
		if len(l) == 0 {
			return nil
		}
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok || len(k) == 0 || bytes.ContainsAny(k, " \t") {
			return errBadHead
		}
		v = bytes.Trim(v, " \t")
		if bytes.EqualFold(k, []byte("Host")) {
			st.host = string(v)
			continue
		}
		_ = st.onHeader(k, v)
	}
	return errBadHead
}

// serveStream runs the checks of an /events or /poll request whose head is
// in head, answers a refusal or (SSE) the stream's header, and registers the
// connection. It reports whether the connection now belongs to the pool.
func (s *Server) serveStream(nc net.Conn, kind connKind, head []byte) bool {
	st := hsState{kind: kind}
	ip := ipKeyOf(nc)
	if err := parseStreamHead(head, &st); err != nil {
		s.refuse(nc, &refusal{400, RefusedBadRequest, err.Error()})
		return false
	}
	c, slot, r := s.decide(&st, nc, ip)
	if r != nil {
		s.refuse(nc, r)
		if c != nil && c.src != nil {
			c.src.Closed()
		}
		if slot {
			s.releaseSlot(ip)
		}
		return false
	}
	if kind == kindSSE {
		// Written here, before the pool owns the socket: a fresh socket's
		// buffer takes it at once (the handshake deadline bounds it).
		if _, err := nc.Write(sseHead); err != nil {
			c.src.Closed()
			s.releaseSlot(ip)
			return false
		}
	}
	if !s.register(c, nc, nil) {
		c.src.Closed()
		s.releaseSlot(ip)
		return false
	}
	return true
}

// refuse answers a refused /events or /poll request like a refused /ws
// handshake: status, Retry-After on 503, a one-line reason.
func (s *Server) refuse(nc net.Conn, r *refusal) {
	s.cfg.Hooks.HandshakeRefused(r.status, r.label)
	body := oneLine(r.reason) + "\n"
	extra := ""
	if r.status == 503 {
		extra = "Retry-After: 1\r\n"
	}
	resp := fmt.Sprintf("HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		r.status, refusalText(r.status), extra, len(body), body)
	_, _ = nc.Write([]byte(resp))
}

func refusalText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	}
	return statusText(code)
}

// sseRetryMs is the reconnection delay an EventSource is told to use.
const sseRetryMs = 2000

// sseHead is the response head of /events and the first field: no
// Content-Length, so the body ends when the connection does (HTTP/1.1
// §6.3); X-Accel-Buffering tells nginx not to buffer it.
var sseHead = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n" +
	"X-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: " + strconv.Itoa(sseRetryMs) + "\n\n")

// SSE pieces, shared: an event is "id: <id>\ndata: <payload>\n\n" written
// as these and slices of the frame itself.
var (
	sseID        = []byte("id: ")
	sseData      = []byte("\ndata: ")
	sseDataOnly  = []byte("data: ")
	sseEnd       = []byte("\n\n")
	sseKeepAlive = []byte(":\n\n")
	// heartbeatFrame is the WebSocket text frame of heartbeat=1.
	heartbeatFrame = []byte("\x81\x12{\"control\":\"ping\"}")
)

// framePayload is the JSON payload of a server text frame (the window's
// frames, built by bridge.AppendTextFrame).
func framePayload(f []byte) []byte {
	if len(f) < 2 {
		return nil
	}
	switch f[1] & 0x7f {
	case 126:
		if len(f) < 4 {
			return nil
		}
		return f[4:]
	case 127:
		if len(f) < 10 {
			return nil
		}
		return f[10:]
	}
	return f[2:]
}

// Frame kinds by payload, for the id a frame carries.
var (
	prefixEvent    = []byte(`{"id":"`)
	prefixCaughtUp = []byte(`{"control":"caught_up","last":"`)
	prefixCursor   = []byte(`{"control":"cursor","last":"`)
)

// frameID returns the id a payload advances a client to: an event's id, or
// the last of caught_up and cursor; nil for any other frame (gap). control
// says the frame is caught_up or cursor, which alone do not end a poll.
func frameID(p []byte) (id []byte, control bool) {
	var rest []byte
	switch {
	case bytes.HasPrefix(p, prefixEvent):
		rest = p[len(prefixEvent):]
	case bytes.HasPrefix(p, prefixCaughtUp):
		rest, control = p[len(prefixCaughtUp):], true
	case bytes.HasPrefix(p, prefixCursor):
		rest, control = p[len(prefixCursor):], true
	default:
		return nil, false
	}
	if i := bytes.IndexByte(rest, '"'); i > 0 {
		return rest[:i], control
	}
	return nil, control
}

// appendSSE appends the SSE rendering of WebSocket frames to bufs: slices
// of the frames and shared pieces, no copy.
func appendSSE(bufs [][]byte, frames [][]byte) [][]byte {
	for _, f := range frames {
		p := framePayload(f)
		if id, _ := frameID(p); id != nil {
			bufs = append(bufs, sseID, id, sseData, p, sseEnd)
		} else {
			bufs = append(bufs, sseDataOnly, p, sseEnd)
		}
	}
	return bufs
}

// sseCloseEvent is what an SSE stream gets instead of a close frame: a
// named event (EventSource's onmessage ignores it) saying why, then the end
// of the stream.
func sseCloseEvent(code int, text string) []byte {
	b := append([]byte("event: close\ndata: {\"code\":"), strconv.Itoa(code)...)
	b = append(b, `,"reason":`...)
	b = strconv.AppendQuote(b, text) // our reasons are ASCII: a JSON string
	return append(b, "}\n\n"...)
}

// pollState is what a waiting poll holds besides its Conn and cursor: the
// frames pulled so far (shared slices), the id it resumed from, and whether
// caught_up alone answers it (a poll with no resume position, or wait=0).
type pollState struct {
	frames [][]byte
	from   string
	atOnce bool
}

// pollAnswer appends the whole answer to a poll: head with Content-Length,
// then {"frames":[<payload>,…],"last":"<id>"} as slices of the frames and
// shared pieces. last is the newest id the frames bring the client to, or
// from when none does.
func pollAnswer(bufs [][]byte, frames [][]byte, from string) [][]byte {
	n0 := len(bufs)
	bufs = append(bufs, nil, pollOpen) // the head is made last
	size := len(pollOpen)
	var last []byte
	for i, f := range frames {
		p := framePayload(f)
		if i > 0 {
			bufs = append(bufs, pollComma)
			size++
		}
		bufs = append(bufs, p)
		size += len(p)
		if id, _ := frameID(p); id != nil {
			last = id
		}
	}
	if last == nil {
		last = []byte(from)
	}
	bufs = append(bufs, pollLast, last, pollClose)
	size += len(pollLast) + len(last) + len(pollClose)
	h := make([]byte, 0, len(pollHead)+24)
	h = append(h, pollHead...)
	h = strconv.AppendInt(h, int64(size), 10)
	bufs[n0] = append(h, "\r\n\r\n"...)
	return bufs
}

var (
	pollHead  = []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: ")
	pollOpen  = []byte(`{"frames":[`)
	pollComma = []byte(",")
	pollLast  = []byte(`],"last":"`)
	pollClose = []byte(`"}`)
)

// pollReady reports whether frames end a poll: an event, or a gap with the
// caught_up (or cursor) that moves the client past it. caught_up alone does
// not (a poll at the head would be answered at once, every time), nor does a
// gap alone: it comes before the replay's first page is read, and an answer
// then would name no newer id, so the next poll would get the same gap.
// With atOnce (a poll with no resume position, or wait=0: the first of a
// client's connection), caught_up alone does: the client learns its position
// and that the path works at once, and its next poll waits.
func pollReady(frames [][]byte, atOnce bool) bool {
	gap, moved := false, false
	for _, f := range frames {
		p := framePayload(f)
		if atOnce && bytes.HasPrefix(p, prefixCaughtUp) {
			return true
		}
		switch id, control := frameID(p); {
		case id != nil && !control:
			return true
		case id == nil:
			gap = true
		case gap:
			moved = true
		}
	}
	return gap && moved
}

// pollDeadline is when a poll registered at now is answered without frames.
func (s *Server) pollDeadline(now int64) int64 { return now + int64(s.cfg.PollTimeout) }

// appendPing appends the keepalive of the connection's transport.
func (c *Conn) appendPing(bufs [][]byte) [][]byte {
	switch {
	case c.kind == kindPoll:
		return bufs // its timer is its timeout (gatherPoll)
	case c.kind == kindSSE:
		return append(bufs, sseKeepAlive)
	case c.heartbeat:
		return append(bufs, pingFrame, heartbeatFrame)
	}
	return append(bufs, pingFrame)
}

// closeBytes is what ends the connection for r: a close frame, or on SSE
// the close event.
func (c *Conn) closeBytes(r *closeReason) []byte {
	if c.kind != kindSSE {
		return r.closeFrame()
	}
	if r.sse != nil {
		return r.sse
	}
	return sseCloseEvent(int(r.code), r.text)
}

// toSSE renders the frames bufs[n0:] as SSE in place, through the worker's
// scratch list.
func (w *worker) toSSE(bufs [][]byte, n0 int) [][]byte {
	w.sse = append(w.sse[:0], bufs[n0:]...)
	bufs = appendSSE(bufs[:n0], w.sse)
	clear(w.sse)
	return bufs
}

// gatherPoll adds the frames bufs[n0:] to the poll's and, once pollReady
// says they answer it, or now (end: timeout, close, drain), puts the whole
// answer in their place. It reports whether it did.
func (c *Conn) gatherPoll(bufs [][]byte, n0 int, end bool) ([][]byte, bool) {
	ps := c.ioState().poll
	ps.frames = append(ps.frames, bufs[n0:]...)
	clear(bufs[n0:])
	bufs = bufs[:n0]
	if !end && !pollReady(ps.frames, ps.atOnce) {
		return bufs, false
	}
	bufs = pollAnswer(bufs, ps.frames, ps.from)
	c.io.poll = nil
	return bufs, true
}

// framesIn is how many frames the completed buffers bufs were, for
// Hooks.FramesWritten: one a buffer on a WebSocket; on SSE and poll the
// payloads (each wrapped in shared pieces), keep-alives and close events.
func (c *Conn) framesIn(bufs [][]byte) int {
	if c.kind == kindWS {
		return len(bufs)
	}
	n := 0
	for _, b := range bufs {
		if len(b) > 0 && (b[0] == '{' && &b[0] != &pollOpen[0] || b[0] == ':' || b[0] == 'e') {
			n++
		}
	}
	return n
}
