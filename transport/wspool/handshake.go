package wspool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"
)

// Refusal labels passed to Hooks.HandshakeRefused; a closed set so metrics
// keep a bounded cardinality (the client still gets the full reason).
const (
	RefusedNotReady      = "not_ready"
	RefusedDraining      = "draining"
	RefusedMaxConns      = "max_connections"
	RefusedMaxConnsPerIP = "max_connections_per_ip"
	RefusedOrigin        = "origin"
	RefusedAuth          = "auth"
	RefusedBadRequest    = "bad_request"
	RefusedUnavailable   = "unavailable"
	RefusedHeaderTooBig  = "header_too_large"
	RefusedTimeout       = "timeout"
)

// Request heads are read into a small pooled buffer first and moved to a
// MaxHeaderBytes one only when they do not fit: the pool holds one buffer per
// handshake in flight at the peak, so its size is paid by every burst of
// connects. Most heads (a browser's included) are well under hdrBufSmall.
const hdrBufSmall = 2048

var (
	hdrBufs    = sync.Pool{New: func() any { return new([]byte) }} // hdrBufSmall
	hdrBufsBig = sync.Pool{New: func() any { return new([]byte) }} // MaxHeaderBytes
)

// handshake owns nc until it is upgraded and registered, handed to the HTTP
// server, or closed. It reads the request itself (bounded by MaxHeaderBytes
// and HandshakeTimeout), so gobwas never reads the socket and no bufio
// outlives the handshake.
func (s *Server) handshake(nc net.Conn) {
	keep := false
	defer func() {
		s.mu.Lock()
		delete(s.handshakes, nc)
		s.mu.Unlock()
		if !keep {
			_ = nc.Close()
		}
	}()
	if s.closed.Load() {
		return
	}
	_ = nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	small := min(hdrBufSmall, s.cfg.MaxHeaderBytes)
	bp := hdrBufs.Get().(*[]byte)
	defer hdrBufs.Put(bp)
	if cap(*bp) < small {
		*bp = make([]byte, small)
	}
	buf := (*bp)[:small]

	n, pooled, hdrEnd, err := readRequestHead(nc, buf, 0)
	if errors.Is(err, errHeaderTooLarge) && len(buf) < s.cfg.MaxHeaderBytes {
		bigp := hdrBufsBig.Get().(*[]byte)
		defer hdrBufsBig.Put(bigp)
		if cap(*bigp) < s.cfg.MaxHeaderBytes {
			*bigp = make([]byte, s.cfg.MaxHeaderBytes)
		}
		big := (*bigp)[:s.cfg.MaxHeaderBytes]
		copy(big, buf[:n])
		buf = big
		n, pooled, hdrEnd, err = readRequestHead(nc, buf, n)
	}
	switch {
	case errors.Is(err, errHeaderTooLarge):
		s.refusePlain(nc, 431, RefusedHeaderTooBig, "request header too large")
		return
	case err != nil:
		// Slowloris or a client that gave up; only the former is counted.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.cfg.Hooks.HandshakeRefused(408, RefusedTimeout)
		}
		return
	case !pooled:
		_ = nc.SetDeadline(time.Time{})
		rc := &replayConn{Conn: nc, buf: bytes.Clone(buf[:n])}
		if s.httpLn.deliver(rc) {
			keep = true
		}
		return
	}
	line, _, _ := bytes.Cut(buf[:n], []byte("\n"))
	if kind := requestKind(line); kind != kindWS {
		// What a stream client sends after its head is read and dropped
		// by the pool.
		keep = s.serveStream(nc, kind, buf[:hdrEnd])
		return
	}
	keep = s.upgrade(nc, buf[:hdrEnd], buf[hdrEnd:n])
}

var errHeaderTooLarge = errors.New("request header too large")

// readRequestHead reads until the request line tells whether this is one
// the pool serves (GET /ws, /events or /poll) and, if it is, until the end of
// the header. buf[:n] holds what was read before. It returns the bytes read,
// and for the pool's requests the end of the header.
func readRequestHead(nc io.Reader, buf []byte, n int) (_ int, isWS bool, hdrEnd int, err error) {
	lineDone := false
	for {
		if !lineDone {
			if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
				lineDone = true
				if isWS = requestKind(buf[:i]) != kindOther; !isWS {
					return n, false, 0, nil
				}
			}
		}
		if lineDone {
			if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
				return n, true, i + 4, nil
			}
		}
		if n == len(buf) {
			return n, isWS, 0, errHeaderTooLarge
		}
		m, rerr := nc.Read(buf[n:])
		n += m
		if rerr != nil {
			return n, isWS, 0, rerr
		}
	}
}

// refusePlain answers a request gobwas never saw.
func (s *Server) refusePlain(nc net.Conn, status int, label, reason string) {
	s.cfg.Hooks.HandshakeRefused(status, label)
	body := reason + "\n"
	resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, statusText(status), len(body), body)
	_, _ = nc.Write([]byte(resp))
}

func statusText(code int) string {
	switch code {
	case 431:
		return "Request Header Fields Too Large"
	case 503:
		return "Service Unavailable"
	}
	return "Error"
}

// hsState is what the gobwas hooks collect of one request.
type hsState struct {
	uri, host, origin, authz, cookie, lastEventID string
	kind                                          connKind
}

func (h *hsState) onHeader(key, value []byte) error {
	switch {
	case bytes.EqualFold(key, []byte("Origin")):
		h.origin = string(value)
	case bytes.EqualFold(key, []byte("Authorization")):
		h.authz = string(value)
	case bytes.EqualFold(key, []byte("Cookie")):
		if h.cookie != "" {
			h.cookie += "; "
		}
		h.cookie += string(value)
	case bytes.EqualFold(key, []byte("Last-Event-ID")):
		h.lastEventID = string(value)
	}
	return nil
}

type refusal struct {
	status int
	label  string
	reason string
}

func (r *refusal) err() error {
	opts := []ws.RejectOption{ws.RejectionStatus(r.status), ws.RejectionReason(oneLine(r.reason) + "\n")}
	if r.status == 503 {
		opts = append(opts, ws.RejectionHeader(ws.HandshakeHeaderString("Retry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\n")))
	} else {
		opts = append(opts, ws.RejectionHeader(ws.HandshakeHeaderString("Content-Type: text/plain; charset=utf-8\r\n")))
	}
	return ws.RejectConnectionError(opts...)
}

// upgrade runs the checks of contract §4 in order (503, 403, 401, 400),
// upgrades, and registers the connection with the poller. It reports
// whether the connection now belongs to the pool.
func (s *Server) upgrade(nc net.Conn, head, extra []byte) bool {
	var (
		st      hsState
		c       *Conn
		slot    bool
		refused *refusal
		ip      = ipKeyOf(nc)
	)
	u := ws.Upgrader{
		// gobwas reads the head we already hold through a pooled bufio.Reader:
		// one the head's size (not its default 4 KiB) holds every line, so
		// the pool costs no more than the heads in flight.
		ReadBufferSize: max(len(head), 256),
		OnRequest:      func(uri []byte) error { st.uri = string(uri); return nil },
		OnHost:         func(h []byte) error { st.host = string(h); return nil },
		OnHeader:       st.onHeader,
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			var r *refusal
			c, slot, r = s.decide(&st, nc, ip)
			if r != nil {
				refused = r
				return nil, r.err()
			}
			return nil, nil
		},
	}
	_, err := u.Upgrade(rw{Reader: bytes.NewReader(head), Conn: nc})
	if err != nil {
		if refused != nil {
			s.cfg.Hooks.HandshakeRefused(refused.status, refused.label)
			s.log.Debug("handshake refused", zap.Int("status", refused.status), zap.String("reason", refused.reason), zap.Stringer("ip", ip))
		} else {
			s.cfg.Hooks.HandshakeRefused(400, RefusedBadRequest)
			s.log.Debug("bad handshake", zap.Error(err), zap.Stringer("ip", ip))
		}
		if c != nil && c.src != nil {
			c.src.Closed()
		}
		if slot {
			s.releaseSlot(ip)
		}
		return false
	}
	if !s.register(c, nc, extra) {
		if c.src != nil {
			c.src.Closed()
		}
		s.releaseSlot(ip)
		return false
	}
	return true
}

// decide runs the checks; on success it returns the accepted connection.
func (s *Server) decide(st *hsState, nc net.Conn, ip ipKey) (*Conn, bool, *refusal) {
	if s.draining.Load() {
		return nil, false, &refusal{503, RefusedDraining, "draining"}
	}
	if err := s.Err(); err != nil {
		return nil, false, &refusal{503, RefusedNotReady, err.Error()}
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			return nil, false, &refusal{503, RefusedNotReady, err.Error()}
		}
	}
	if label := s.takeSlot(ip); label != "" {
		return nil, false, &refusal{503, label, strings.ReplaceAll(label, "_", " ") + " reached"}
	}
	if !originAllowed(st.origin, st.host, s.cfg.AllowedOrigins) {
		return nil, true, &refusal{403, RefusedOrigin, "origin not allowed"}
	}
	_, rawQuery, _ := strings.Cut(st.uri, "?")
	query, qerr := url.ParseQuery(rawQuery)
	id, err := s.cfg.Auth.Authenticate(&AuthRequest{Query: query, Authorization: st.authz, Cookie: st.cookie})
	if err == nil {
		err = s.checkIdentity(&id)
	}
	if err != nil {
		return nil, true, &refusal{401, RefusedAuth, err.Error()}
	}
	if qerr != nil {
		return nil, true, &refusal{400, RefusedBadRequest, "bad query: " + qerr.Error()}
	}
	c := &Conn{s: s, ip: ip, tIdx: -1, kind: st.kind}
	switch st.kind {
	case kindWS:
		c.heartbeat = query.Get("heartbeat") == "1"
	case kindPoll:
		// The id a poll answered without frames names: the one it resumed
		// from (the core checks it; the header counts only without the
		// parameter, as for the core).
		from := st.lastEventID
		if vs := query["last_event_id"]; len(vs) > 0 && vs[len(vs)-1] != "" {
			from = vs[len(vs)-1]
		}
		// Without a position (or with wait=0) caught_up answers it at once.
		c.ioState().poll = &pollState{from: from, atOnce: from == "" || query.Get("wait") == "0"}
	}
	// The handshake holds the job until registration: a Wake from the core
	// before then only sets a bit, served right after.
	c.state.Store(stSched)
	c.setToken(&id)
	src, err := s.cfg.Accept(&Request{Conn: c, Identity: id, Query: query, LastEventID: st.lastEventID})
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, true, &refusal{503, RefusedUnavailable, err.Error()}
		}
		return nil, true, &refusal{400, RefusedBadRequest, err.Error()}
	}
	c.src = src
	return c, true, nil
}

func (s *Server) checkIdentity(id *Identity) error {
	if err := s.cfg.ValidateName(id.User); err != nil {
		return fmt.Errorf("user %v", err)
	}
	if len(id.Groups) > s.cfg.MaxGroups {
		return fmt.Errorf("%d groups, at most %d allowed", len(id.Groups), s.cfg.MaxGroups)
	}
	for _, g := range id.Groups {
		if err := s.cfg.ValidateName(g); err != nil {
			return fmt.Errorf("group %v", err)
		}
	}
	return nil
}

// register hands an upgraded connection to the poller, the timer heap and
// the workers. It reports false if the connection could not be registered
// (then nothing else holds it).
func (s *Server) register(c *Conn, nc net.Conn, extra []byte) bool {
	if len(extra) > 0 {
		// The client sent frames before it saw our 101.
		c.consume(extra, s.cfg.MaxMessageBytes)
	}
	_ = nc.SetDeadline(time.Time{})
	sc, ok := nc.(syscall.Conn)
	if !ok {
		s.log.Error("connection has no descriptor", zap.String("type", fmt.Sprintf("%T", nc)))
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	// The pool keeps a duplicate of the descriptor and closes the
	// net.Conn: its netFD, addresses and runtime poller registration would
	// otherwise stay alive (and be polled by Go's netpoller) for the whole
	// life of the connection. Closing one of two descriptors of a socket
	// sends nothing; the socket ends when teardown closes the duplicate.
	fd, ok := dupSocket(rc)
	if !ok {
		return false
	}
	_ = nc.Close()
	c.fd = fd
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	c.nextPing = now + int64(s.cfg.PingInterval)
	if c.kind == kindPoll {
		c.nextPing = s.pollDeadline(now)
	}
	if err := s.poller.add(c); err != nil {
		s.log.Warn("register", zap.Error(err))
		sysClose(fd, false)
		return false
	}
	s.cfg.Hooks.ConnOpened()
	next := c.nextPing
	if exp := c.expiresAt(); exp != 0 {
		next = min(next, exp)
	}
	s.timers.set(c, next)
	if s.draining.Load() {
		// Drain may have taken its snapshot before the poller knew c. The
		// job is still ours, so this only sets the bits.
		c.requestClose(closeGoingAway, stDrain)
	}
	// Hand the job (stSched is still ours) to the workers.
	c.state.Or(stRead | stWake)
	s.runq.push(c)
	return true
}

// rw feeds gobwas the request head we already read and lets it write its
// response straight to the connection.
type rw struct {
	*bytes.Reader
	Conn net.Conn
	w    io.Writer // tests only; nil writes to Conn
}

func (r rw) Read(p []byte) (int, error) { return r.Reader.Read(p) }
func (r rw) Write(p []byte) (int, error) {
	if r.w != nil {
		return r.w.Write(p)
	}
	return r.Conn.Write(p)
}

// originAllowed applies contract §2: no Origin passes; "*" allows all; an
// empty list allows only the request's own host; else the normalized origin
// must be listed.
func originAllowed(origin, host string, allowed []string) bool {
	if origin == "" {
		return true
	}
	if len(allowed) == 0 {
		o, err := normalizeOrigin(origin)
		if err != nil {
			return false
		}
		scheme, ohost, _ := strings.Cut(o, "://")
		h := stripDefaultPort(scheme, strings.ToLower(host))
		if ohost == h {
			return true
		}
		// Host carries no scheme: "example.com:80" and an http origin
		// without port, or the reverse, are the same host.
		return ohost == stripDefaultPort(scheme, h+defaultPort(scheme)) || ohost+defaultPort(scheme) == h
	}
	o, err := normalizeOrigin(origin)
	if err != nil {
		return false
	}
	for _, a := range allowed {
		if a == "*" {
			return true
		}
		if n, err := normalizeOrigin(a); err == nil && n == o {
			return true
		}
	}
	return false
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http", "ws":
		return ":80"
	case "https", "wss":
		return ":443"
	}
	return ""
}
