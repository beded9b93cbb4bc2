package wspool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"
)

// Server accepts WebSocket connections on /ws, serves every other path with
// Config.HTTPHandler on the same port, and drives the connections with an
// epoll poller, one timer heap and a fixed worker pool.
//
// Goroutines, all started by Start and waited for by Close: the accept loop,
// the poll loop, the timer loop, Workers pool workers, the http.Server of
// other paths, and one goroutine per handshake in flight (bounded by
// MaxHandshakes and HandshakeTimeout). An upgraded connection has none.
//
// Locks: Server.mu (slots, per-IP counts, handshakes), poller.mu (fd →
// Conn), runQueue.mu and timers.mu (the heap) are all leaves but one: the
// poll loop holds poller.mu's read lock while scheduling, which takes
// runQueue.mu for a push that never blocks. None is held while touching a
// socket. Conn has no lock at all: its socket belongs to whichever job
// holds stSched.
type Server struct {
	cfg     Config
	ln      net.Listener
	poller  *poller
	timers  *timers
	runq    *runQueue
	httpLn  *chanListener
	httpSrv *http.Server
	log     *zap.Logger

	handshakeSem chan struct{}
	nconn        atomic.Int64 // WebSocket connections, handshakes after their 503 check included
	draining     atomic.Bool
	closed       atomic.Bool
	failed       atomic.Pointer[error] // why the pool stopped serving; nil while it serves

	mu         sync.Mutex
	perIP      map[ipKey]int         // guarded by mu
	handshakes map[net.Conn]struct{} // in flight; guarded by mu
	emptyCh    chan struct{}         // closed when nconn drops to 0; guarded by mu

	done      chan struct{}
	acceptWG  sync.WaitGroup
	wg        sync.WaitGroup // loops and workers
	hsWG      sync.WaitGroup // handshakes
	startOnce sync.Once
	closeOnce sync.Once
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("wspool: server closed")

// ErrPollerStopped is what Err wraps once the poll loop stopped on an error
// before Close: no connection gets another readiness event.
var ErrPollerStopped = errors.New("poller stopped")

// New validates cfg, listens and sets up the poller; Start runs it.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The poller first: where there is no epoll, New says so before it
	// listens.
	p, err := newPoller()
	if err != nil {
		if cfg.Listener != nil {
			_ = cfg.Listener.Close() // the Server owns it
		}
		return nil, err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			p.close()
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	s := &Server{
		cfg:          cfg,
		ln:           ln,
		poller:       p,
		timers:       newTimers(),
		runq:         newRunQueue(),
		log:          cfg.Logger,
		handshakeSem: make(chan struct{}, cfg.MaxHandshakes),
		perIP:        make(map[ipKey]int),
		handshakes:   make(map[net.Conn]struct{}),
		done:         make(chan struct{}),
	}
	s.httpLn = newChanListener(ln.Addr())
	h := cfg.HTTPHandler
	if h == nil {
		h = http.NotFoundHandler()
	}
	s.httpSrv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(cfg.Logger),
	}
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Conns is the number of open WebSocket connections (handshakes past their
// capacity check included).
func (s *Server) Conns() int { return int(s.nconn.Load()) }

// Err is nil while the pool serves its connections and says why once it
// cannot: after an error that stopped the poll loop it returns
// ErrPollerStopped wrapping that error ("poller stopped: epoll_wait: ..."),
// and from then on new handshakes are refused with 503. Readiness reports
// it. Err stays nil after Close. Safe for concurrent use.
func (s *Server) Err() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records the first reason the pool stopped serving, and logs it.
func (s *Server) fail(err error) {
	if s.failed.CompareAndSwap(nil, &err) {
		s.log.Error("websocket pool failed; not ready", zap.Error(err))
	}
}

// Start starts the server's goroutines and returns; Close stops them.
func (s *Server) Start() error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.startOnce.Do(func() {
		for i := 0; i < s.cfg.Workers; i++ {
			s.wg.Go(s.work)
		}
		s.wg.Go(s.pollLoop)
		s.wg.Go(func() { s.timers.run(s.done) })
		s.wg.Go(func() { _ = s.httpSrv.Serve(s.httpLn) })
		s.acceptWG.Go(s.acceptLoop)
	})
	return nil
}

// pollLoop runs the poller until Close; a poll loop that stops on an error
// fails the pool.
func (s *Server) pollLoop() {
	if err := s.poller.run(); err != nil {
		s.fail(fmt.Errorf("%w: %w", ErrPollerStopped, err))
	}
}

func (s *Server) acceptLoop() {
	var backoff time.Duration
	for {
		select {
		case s.handshakeSem <- struct{}{}:
		case <-s.done:
			return
		}
		nc, err := s.ln.Accept()
		if err != nil {
			<-s.handshakeSem
			if s.closed.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient error: back off instead of
				// spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", zap.Error(err), zap.Duration("backoff", backoff))
				select {
				case <-time.After(backoff):
				case <-s.done:
					return
				}
				continue
			}
			s.log.Error("accept failed; not accepting any more", zap.Error(err))
			return
		}
		backoff = 0
		s.mu.Lock()
		s.handshakes[nc] = struct{}{}
		s.mu.Unlock()
		s.hsWG.Go(func() {
			defer func() { <-s.handshakeSem }()
			s.handshake(nc)
		})
	}
}

// connGone is the end of every connection that got past its capacity
// check: counts, per-IP bookkeeping, hooks.
func (s *Server) connGone(c *Conn, code ws.StatusCode) {
	s.releaseSlot(c.ip)
	s.cfg.Hooks.ConnClosed(int(code))
}

// ipKey is a client's IP address, IPv4 mapped into IPv6: a fixed-size value,
// so a connection and the per-IP count hold no string of it.
type ipKey [16]byte

func (k ipKey) String() string { return netip.AddrFrom16(k).Unmap().String() }

// ipKeyOf is the IP address of a connection's remote end.
func ipKeyOf(nc net.Conn) ipKey {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().As16()
	}
	return ipKey{} // not an IP socket (tests): all such clients share one key
}

// takeSlot reserves a connection slot for ip; it reports the refusal reason.
func (s *Server) takeSlot(ip ipKey) string {
	if n := s.nconn.Add(1); n > int64(s.cfg.MaxConnections) {
		s.nconn.Add(-1)
		return "max_connections"
	}
	if s.cfg.MaxConnectionsPerIP > 0 {
		s.mu.Lock()
		if s.perIP[ip] >= s.cfg.MaxConnectionsPerIP {
			s.mu.Unlock()
			s.nconn.Add(-1)
			return "max_connections_per_ip"
		}
		s.perIP[ip]++
		s.mu.Unlock()
	}
	return ""
}

func (s *Server) releaseSlot(ip ipKey) {
	s.mu.Lock()
	if s.cfg.MaxConnectionsPerIP > 0 {
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
	}
	if s.nconn.Add(-1) == 0 && s.emptyCh != nil {
		close(s.emptyCh)
		s.emptyCh = nil
	}
	s.mu.Unlock()
}

// waitEmpty waits until no connection is left or ctx ends.
func (s *Server) waitEmpty(ctx context.Context) error {
	s.mu.Lock()
	if s.nconn.Load() == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.emptyCh == nil {
		s.emptyCh = make(chan struct{})
	}
	ch := s.emptyCh
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Drain stops accepting (new handshakes get 503 "draining"), lets every
// connection write what its source has ready, then closes it with 1001.
// Connections still open when ctx ends are closed at TCP level and Drain
// returns ctx.Err().
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	for _, c := range s.poller.snapshot() {
		c.requestClose(closeGoingAway, stDrain)
	}
	err := s.waitEmpty(ctx)
	if err != nil {
		for _, c := range s.poller.snapshot() {
			c.schedule(stKill)
		}
	}
	return err
}

// Close stops the server: it closes the listener, every handshake and every
// connection (at TCP level; use Drain first for a clean shutdown), and
// waits for all its goroutines. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.draining.Store(true)
		_ = s.ln.Close()
		close(s.done)
		s.acceptWG.Wait() // no handshake starts after this
		s.mu.Lock()
		for nc := range s.handshakes {
			_ = nc.SetDeadline(time.Unix(1, 0))
		}
		s.mu.Unlock()
		s.hsWG.Wait()
		// Only workers tear connections down; they are still running.
		for _, c := range s.poller.snapshot() {
			c.schedule(stKill)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.waitEmpty(ctx); err != nil {
			s.log.Error("connections left at close", zap.Int64("conns", s.nconn.Load()))
		}
		cancel()
		_ = s.httpSrv.Close()
		s.httpLn.Close()
		s.runq.stop()
		s.poller.wakeup()
		s.wg.Wait()
		s.poller.close()
	})
	return nil
}
