package bench

import (
	"bufio"
	"bytes"
	"io"
	"time"
)

// The SSE side of the bench client: GET /events writes each frame as
// "id: <id>\ndata: <frame>\n\n" (control frames without the id line, or
// with it for caught_up and cursor), comments (":") as keep-alives, and an
// "event: close" whose data is {"code":…,"reason":…} before the end. The
// frame after "data: " is byte-exact, the same as on /ws, so the client's
// frame handling is the WebSocket one.

var (
	sseDataField  = []byte("data: ")
	sseEventClose = []byte("event: close")
	sseCodeKey    = []byte(`"code":`)
)

// sseEvents handles the complete events at the start of p, received at now,
// and returns the bytes they used; ok false when the stream ended with a
// close event (code is its code).
func sseEvents(c *wsClient, p []byte, now int64, sink *latencySink) (used, code int, ok bool) {
	off := 0
	for {
		end := bytes.Index(p[off:], []byte("\n\n"))
		if end < 0 {
			return off, 0, true
		}
		ev := p[off : off+end]
		off += end + 2
		if code, closed := sseEvent(c, ev, now, sink); closed {
			return off, code, false
		}
	}
}

// sseEvent handles one event's lines (without the blank line after them).
func sseEvent(c *wsClient, ev []byte, now int64, sink *latencySink) (code int, closed bool) {
	var data []byte
	isClose := false
	for len(ev) > 0 {
		line, rest, _ := bytes.Cut(ev, []byte("\n"))
		ev = rest
		switch {
		case bytes.HasPrefix(line, sseDataField):
			// The bridge sends one data line per event; more are joined by
			// a newline, as EventSource does.
			if data != nil {
				data = append(append(data, '\n'), line[len(sseDataField):]...)
			} else {
				data = line[len(sseDataField):]
			}
		case bytes.Equal(line, sseEventClose):
			isClose = true
		}
	}
	if isClose {
		if i := bytes.Index(data, sseCodeKey); i >= 0 {
			n, _ := leadingInt(data[i+len(sseCodeKey):])
			return int(n), true
		}
		return 0, true
	}
	if data != nil {
		c.frameAt(data, now, sink)
	}
	return 0, false
}

// readSSE is the goroutine client's SSE reader: events until the stream
// ends, then done closes.
func (c *wsClient) readSSE(r io.Reader, sink *latencySink, done chan struct{}) {
	defer close(done)
	br := bufio.NewReaderSize(r, 4096)
	var ev []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			ev = append(ev, line...)
			continue
		}
		if err != nil {
			c.ended(0)
			return
		}
		if len(line) == 1 { // the blank line ends the event
			if len(ev) > 0 {
				if code, closed := sseEvent(c, bytes.TrimSuffix(ev, []byte("\n")), time.Now().UnixMicro(), sink); closed {
					c.ended(code)
					return
				}
			}
			ev = ev[:0]
			continue
		}
		ev = append(ev, line...)
	}
}
