package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// wsClient is one load-generating WebSocket client, user u<user>. It keeps
// O(1) state per connection: the contract delivers a connection's events in
// stream order without repeats, so an id not above the previous one is a
// duplicate (or an order violation, as wrong for the contract). A set of
// seen ids would cost the bench more memory than the bridge it measures.
// The counts live across reconnects (mixed): a resumed connection starts
// after the id the client resumed from, so a repeat of an id it already
// holds is a duplicate there too.
type wsClient struct {
	user int
	tag  []byte // runTag
	sse  bool   // the connection is GET /events (SSE lines), not a WebSocket
	// pollURL, for --transport poll, is the client's GET /poll address
	// without a position; the poll loop adds last_event_id.
	pollURL string

	// wmu serialises writes (pongs, our close frame) and the transport's
	// own state: the connection or descriptor the frames come from.
	wmu    sync.Mutex
	hangup func(sendClose bool) // ends the connection from our side; the transport then closes done
	send   func(msg []byte)     // writes one text message (WebSocket only); set with hangup

	mu           sync.Mutex
	last         streamID // newest event of the run received
	cursor       streamID // newest id held for a resume: any event, caught_up or cursor frame
	replaying    bool     // a resumed connection before its caught_up: frames are replay, not live
	unique       int64
	dups         int64
	misdeliver   int64
	foreign      int64 // events of other runs, ignored
	caughtUpUS   int64 // unix µs of the caught_up frame; 0 before
	serverClosed bool  // the server ended the connection before we did
	closeCode    int   // its close code; 1006 when it ended without one
	closedUS     int64 // unix µs the server's close was read
	closedByUs   bool

	// Set by the transport when it takes a connection: counters and sinks
	// of the reading loop (epoll) or of the set (goroutine per connection).
	received *atomic.Int64 // events received
	caught   *atomic.Int64 // shared per set: clients caught up
	acks     *atomic.Int64 // shared per set: {"control":"token"} answers (refresh); nil: not counted
	ackExp   int64         // the exp a token answer must carry; another counts in badAcks
	badAcks  *atomic.Int64
	srvClose *atomic.Int64 // shared per set: connections the server ended; nil: not counted
	replayed *latencySink  // latency of frames replayed on resume; nil: they go to the live sink
	done     chan struct{} // closed when the connection's reader is done with it
	busy     atomic.Bool   // a reconnect of this client is under way
	away     bool          // closed for a reconnect not yet made; only the holder of busy touches it
}

// clientIO is how a set's clients get their frames: a few epoll loops on
// Linux, a goroutine per connection elsewhere (clientio_*.go).
type clientIO interface {
	// attach takes over a connection just dialed for c, with what the
	// handshake read past the 101 (br, may be nil); c.done closes once the
	// connection has ended and its frames are handled. On error the
	// connection is closed and c.done is left to the caller.
	attach(c *wsClient, conn net.Conn, br *bufio.Reader) error
	received() int64       // events received by every client so far
	merged() mergedLatency // once every client is closed
	stop()                 // after merged's clients are closed
}

// mergedLatency is what a set's clients measured, merged over its readers.
type mergedLatency struct {
	live, replay latHist
	chart        []sample
	phases       [phaseCount]latHist // live, by phase (refresh)
}

// streamID is a Redis stream id, compared numerically.
type streamID struct{ ms, seq uint64 }

func parseID(b []byte) (streamID, bool) {
	dash := bytes.IndexByte(b, '-')
	if dash <= 0 {
		return streamID{}, false
	}
	ms, err1 := strconv.ParseUint(string(b[:dash]), 10, 64)
	seq, err2 := strconv.ParseUint(string(b[dash+1:]), 10, 64)
	return streamID{ms, seq}, err1 == nil && err2 == nil
}

func (a streamID) after(b streamID) bool {
	return a.ms > b.ms || (a.ms == b.ms && a.seq > b.seq)
}

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

// quotedID parses the id that b starts with, up to its closing quote.
func quotedID(b []byte) (streamID, bool) {
	end := bytes.IndexByte(b, '"')
	if end < 0 {
		return streamID{}, false
	}
	return parseID(b[:end])
}

// dialWS opens one connection; br, when not nil, holds what the handshake
// read ahead of the first frame.
func dialWS(ctx context.Context, url string) (net.Conn, *bufio.Reader, error) {
	d := ws.Dialer{Timeout: 30 * time.Second}
	conn, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	return conn, br, nil
}

// dialSSE opens GET /events at url (http://host:port/events?…) and reads
// the response head; br holds what came after it (the retry field, and
// perhaps the first events).
func dialSSE(ctx context.Context, rawURL string) (net.Conn, *bufio.Reader, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, err
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "GET "+u.RequestURI()+" HTTP/1.1\r\nHost: "+u.Host+"\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		line, _ := br.ReadString('\n')
		_ = conn.Close()
		return nil, nil, fmt.Errorf("GET /events: %s: %s", resp.Status, strings.TrimSpace(line))
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// dial opens one connection of the transport; br, when not nil, holds what
// was read past the handshake.
func dial(ctx context.Context, sse bool, url string) (net.Conn, *bufio.Reader, error) {
	if sse {
		return dialSSE(ctx, url)
	}
	return dialWS(ctx, url)
}

func dialClient(ctx context.Context, sse bool, url string, user int, tag []byte) (*wsClient, net.Conn, *bufio.Reader, error) {
	conn, br, err := dial(ctx, sse, url)
	if err != nil {
		return nil, nil, nil, err
	}
	return &wsClient{user: user, tag: tag, sse: sse, done: make(chan struct{})}, conn, br, nil
}

var (
	idPrefix = []byte(`{"id":"`)
	tKey     = []byte(`"data":{"t":`)
	uKey     = []byte(`,"u":`)
	caughtUp = []byte(`"control":"caught_up"`)
	cursorCF = []byte(`"control":"cursor"`)
	lastKey  = []byte(`"last":"`)
	tokenCF  = []byte(`{"control":"token","exp":`)
)

// frame handles one text message. Frames are byte-exact by contract, so
// prefixes are reliable and the bench parses them by hand: at 100k+
// deliveries a second on the same two cores as the bridge, encoding/json
// in the clients would be what the run measures.
func (c *wsClient) frame(p []byte, sink *latencySink) { c.frameAt(p, time.Now().UnixMicro(), sink) }

// frameAt is frame for a message received at now (unix µs).
func (c *wsClient) frameAt(p []byte, now int64, sink *latencySink) {
	if !bytes.HasPrefix(p, idPrefix) {
		c.control(p, now)
		return
	}
	id, ok := quotedID(p[len(idPrefix):])
	if !ok {
		return
	}
	if c.tag != nil && !bytes.Contains(p, c.tag) {
		c.mu.Lock()
		c.foreign++
		if id.after(c.cursor) {
			c.cursor = id // a browser stores every event's id, whoever sent it
		}
		c.mu.Unlock()
		return
	}
	// "u" names the one client an event was addressed to (targeted, resume).
	mis := false
	if i := bytes.Index(p, uKey); i >= 0 {
		u, _ := leadingInt(p[i+len(uKey):])
		mis = u != int64(c.user)
	}
	c.mu.Lock()
	if id.after(c.last) {
		c.unique++
		c.last = id
	} else {
		c.dups++
	}
	if id.after(c.cursor) {
		c.cursor = id
	}
	if mis {
		c.misdeliver++
	}
	replay := c.replaying
	c.mu.Unlock()
	c.received.Add(1)
	if replay && c.replayed != nil {
		sink = c.replayed // what a resume replays waited out the time away: not live latency
	}
	if i := bytes.Index(p, tKey); i >= 0 && sink != nil {
		if t, ok := leadingInt(p[i+len(tKey):]); ok && t > 0 {
			sink.add(now, now-t)
		}
	}
}

// control handles a control frame. caught_up ends a resumed connection's
// replay; caught_up and cursor carry an id the client stores like an event
// id (the contract), so a later resume starts there.
func (c *wsClient) control(p []byte, now int64) {
	if rest, ok := bytes.CutPrefix(p, tokenCF); ok && c.acks != nil {
		c.acks.Add(1)
		if exp, _ := leadingInt(rest); exp != c.ackExp && c.badAcks != nil {
			c.badAcks.Add(1)
		}
		return
	}
	isCaughtUp := bytes.Contains(p, caughtUp)
	var last streamID
	hasLast := false
	if i := bytes.Index(p, lastKey); i >= 0 && (isCaughtUp || bytes.Contains(p, cursorCF)) {
		last, hasLast = quotedID(p[i+len(lastKey):])
	}
	c.mu.Lock()
	if hasLast && last.after(c.cursor) {
		c.cursor = last
	}
	first := false
	if isCaughtUp {
		c.replaying = false
		first = c.caughtUpUS == 0
		if first {
			c.caughtUpUS = now
		}
	}
	c.mu.Unlock()
	if first {
		c.caught.Add(1)
	}
}

func leadingInt(b []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	return n, i > 0
}

func (c *wsClient) ended(code int) {
	if code == 0 {
		code = int(ws.StatusAbnormalClosure)
	}
	c.mu.Lock()
	counted := false
	if !c.closedByUs && !c.serverClosed {
		c.serverClosed = true
		c.closeCode = code
		c.closedUS = time.Now().UnixMicro()
		counted = c.srvClose != nil
	}
	c.mu.Unlock()
	if counted {
		c.srvClose.Add(1)
	}
}

// close ends the connection from our side (a clean close frame first, so
// the bridge logs a normal close rather than a reset) and waits for the
// reader. A connection the server ended before this keeps its code.
func (c *wsClient) close() {
	c.mu.Lock()
	ended := c.serverClosed
	c.closedByUs = true // from here on an EOF is ours
	done, hangup := c.done, c.hangup
	c.mu.Unlock()
	hangup(!ended)
	<-done
}

// closeFrame is our masked close frame, 1000.
func closeFrame() []byte {
	return closeFrameBytes
}

var closeFrameBytes = makeCloseFrame()

// textFrame is p as a masked client text frame.
func textFrame(p []byte) []byte {
	b, _ := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame(p)))
	return b
}

func makeCloseFrame() []byte {
	body := make([]byte, 2)
	binary.BigEndian.PutUint16(body, uint16(ws.StatusNormalClosure))
	var b bytes.Buffer
	_ = ws.WriteFrame(&b, ws.MaskFrame(ws.NewCloseFrame(body)))
	return b.Bytes()
}

// down reports whether the connection has ended (closed by either side, or
// a reconnect that failed).
func (c *wsClient) down() bool {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// reconnect opens a new connection that resumes after the newest id the
// client holds, as a browser SDK does; the old one must be closed. It
// returns the close code of the old connection when the bridge ended it, 0
// when we did. On error the client stays down, to be tried again.
func (c *wsClient) reconnect(ctx context.Context, url string, cio clientIO) (int, error) {
	c.mu.Lock()
	from := c.cursor
	c.mu.Unlock()
	conn, br, err := dial(ctx, c.sse, url+"&last_event_id="+from.String())
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	code := 0
	if c.serverClosed {
		code = c.closeCode
	}
	c.done = make(chan struct{})
	c.closedByUs, c.serverClosed, c.closeCode = false, false, 0
	c.replaying = true
	if from.after(c.last) {
		c.last = from // anything up to the resume id is a repeat from here on
	}
	done := c.done
	c.mu.Unlock()
	if err := cio.attach(c, conn, br); err != nil {
		_ = conn.Close()
		close(done) // down, to be tried again
		return 0, err
	}
	return code, nil
}

// userName is client i's user id. It carries the run id, so concurrent runs
// against one bridge never address each other's clients.
func userName(run string, i int) string { return "b" + run + "u" + strconv.Itoa(i) }

// runTag marks a run's events in their data; a client ignores events
// without its run's tag (broadcasts of another run on the same bridge).
func runTag(run string) []byte { return []byte(`"r":"` + run + `"`) }

// groupName is group k of a run (revoke, refresh): run-tagged like users.
func groupName(run string, k int) string { return "b" + run + "g" + strconv.Itoa(k) }
