package wspool

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Defaults of Config. Where a field is a node setting, its default is that
// setting's documented default (README, contract §4), so a library user who
// leaves a field zero gets the number an operator reads about; config/ holds
// those and TestDefaultsAreTheSettings pins the two together.
const (
	DefaultListen           = ":8080"          // listen
	DefaultMaxGroups        = 100              // max_groups
	DefaultMaxConnections   = 100000           // max_connections
	DefaultMaxMessageBytes  = 4096             // max_message_bytes
	DefaultHandshakeTimeout = 5 * time.Second  // handshake_timeout
	DefaultPingInterval     = 25 * time.Second // ping_interval
	DefaultWriteTimeout     = 10 * time.Second // write_timeout
	DefaultPollTimeout      = 25 * time.Second // poll_timeout
	DefaultMaxHandshakes    = 4096             // no setting
	DefaultMaxHeaderBytes   = 8192             // no setting
	DefaultCloseGrace       = 2 * time.Second  // no setting
	DefaultMaxWriteBatch    = 64 << 10         // no setting
)

// DefaultWorkers is the pool size when Workers (workers) is 0: max(4, 2 ×
// GOMAXPROCS).
func DefaultWorkers() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// Config configures a Server. Zero values take the defaults above; New
// calls setDefaults and then Validate.
type Config struct {
	// Listen is the TCP address to listen on (default ":8080"); ignored when
	// Listener is set.
	Listen string
	// Listener, when set, is used instead of Listen. The Server owns it and
	// closes it on Close. It must be a TCP listener (the pool needs sockets).
	Listener net.Listener

	// AllowedOrigins lists full origins ("https://app.example"). Empty means
	// the request's own host only; "*" allows every origin. A request without
	// Origin always passes.
	AllowedOrigins []string
	// Auth establishes identities; required.
	Auth Authenticator
	// ValidateName checks a user id or group name; required. The core passes
	// bridge.ValidateName, so the rule of contract §4 lives in one place.
	ValidateName func(string) error
	// MaxGroups bounds the groups of one identity (default 100).
	MaxGroups int

	// MaxConnections bounds open WebSocket connections, handshakes included
	// (default 100000).
	MaxConnections int
	// MaxConnectionsPerIP bounds connections per client IP; 0 turns it off.
	MaxConnectionsPerIP int
	// MaxHandshakes bounds handshakes in flight, each of which holds a
	// goroutine until done or HandshakeTimeout (default 4096). When it is
	// reached the pool stops accepting and the kernel backlog absorbs the rest.
	MaxHandshakes int
	// MaxMessageBytes bounds a client message; larger closes with 1009
	// (default 4096).
	MaxMessageBytes int
	// MaxHeaderBytes bounds the request line plus headers (default 8192).
	MaxHeaderBytes int
	// HandshakeTimeout bounds reading the request and answering it (default 5s).
	HandshakeTimeout time.Duration
	// PingInterval is the keepalive period; a peer silent for two intervals is
	// closed (default 25s).
	PingInterval time.Duration
	// WriteTimeout closes a connection whose pending bytes made no progress
	// that long (default 10s).
	WriteTimeout time.Duration
	// PollTimeout is how long a GET /poll waits for an event before it is
	// answered without (default 25s).
	PollTimeout time.Duration
	// CloseGrace is how long a connection that sent its close frame waits for
	// the peer's close before the socket is closed anyway (default 2s).
	CloseGrace time.Duration
	// Workers is the size of the pool that runs reads and drains (default
	// 2*GOMAXPROCS, at least 4): work never blocks on a socket, so more
	// workers than CPUs only help to hide the scheduling latency of a
	// preempted worker; a few spare ones cost 8 KiB of stack each.
	Workers int
	// MaxWriteBatch is about how many bytes one writev takes from a source
	// (default 64 KiB).
	MaxWriteBatch int

	// Ready, when set and returning an error, refuses handshakes with 503 and
	// the error as reason (the node is not ready yet).
	Ready func() error
	// Accept is the core's handshake callback; required.
	Accept AcceptFunc
	// Hooks observe the pool; nil observes nothing.
	Hooks Hooks
	// Logger logs; nil logs nothing.
	Logger *zap.Logger
	// HTTPHandler serves every request that is not GET /ws on the same port;
	// nil answers 404.
	HTTPHandler http.Handler
}

func (c *Config) setDefaults() {
	if c.Listen == "" && c.Listener == nil {
		c.Listen = DefaultListen
	}
	c.MaxGroups = cmp.Or(c.MaxGroups, DefaultMaxGroups)
	c.MaxConnections = cmp.Or(c.MaxConnections, DefaultMaxConnections)
	c.MaxHandshakes = cmp.Or(c.MaxHandshakes, DefaultMaxHandshakes)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.MaxHeaderBytes = cmp.Or(c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	c.HandshakeTimeout = cmp.Or(c.HandshakeTimeout, DefaultHandshakeTimeout)
	c.PingInterval = cmp.Or(c.PingInterval, DefaultPingInterval)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.PollTimeout = cmp.Or(c.PollTimeout, DefaultPollTimeout)
	c.CloseGrace = cmp.Or(c.CloseGrace, DefaultCloseGrace)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers())
	c.MaxWriteBatch = cmp.Or(c.MaxWriteBatch, DefaultMaxWriteBatch)
	if c.Hooks == nil {
		c.Hooks = nopHooks{}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate reports every invalid setting, joined with errors.Join, each
// named as users write it (the node's setting, or the field in snake case
// where there is none).
func (c *Config) Validate() error {
	var errs []error
	positive := []struct {
		name string
		v    int64
	}{
		{"max_groups", int64(c.MaxGroups)},
		{"max_connections", int64(c.MaxConnections)},
		{"max_handshakes", int64(c.MaxHandshakes)},
		{"max_message_bytes", int64(c.MaxMessageBytes)},
		{"handshake_timeout", int64(c.HandshakeTimeout)},
		{"ping_interval", int64(c.PingInterval)},
		{"write_timeout", int64(c.WriteTimeout)},
		{"poll_timeout", int64(c.PollTimeout)},
		{"close_grace", int64(c.CloseGrace)},
		{"workers", int64(c.Workers)},
		{"max_write_batch", int64(c.MaxWriteBatch)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be > 0", p.name))
		}
	}
	if c.MaxConnectionsPerIP < 0 {
		errs = append(errs, errors.New("max_connections_per_ip: must be >= 0"))
	}
	if c.MaxHeaderBytes < 256 {
		errs = append(errs, errors.New("max_header_bytes: must be >= 256"))
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if _, err := normalizeOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("allowed_origins: %q: %v", o, err))
			break
		}
	}
	if c.Auth == nil {
		errs = append(errs, errors.New("auth: no authenticator"))
	}
	if c.Accept == nil {
		errs = append(errs, errors.New("wspool: Accept is required"))
	}
	if c.ValidateName == nil {
		errs = append(errs, errors.New("wspool: ValidateName is required"))
	}
	return errors.Join(errs...)
}

// normalizeOrigin lowercases scheme and host and drops a default port, so
// "HTTPS://App.example:443" and "https://app.example" compare equal.
func normalizeOrigin(o string) (string, error) {
	o = strings.TrimSuffix(o, "/")
	scheme, hostport, ok := strings.Cut(o, "://")
	if !ok || scheme == "" || hostport == "" {
		return "", errors.New("not scheme://host[:port]")
	}
	if strings.ContainsAny(hostport, "/?#@ ") {
		return "", errors.New("not scheme://host[:port]")
	}
	scheme = strings.ToLower(scheme)
	hostport = strings.ToLower(hostport)
	return scheme + "://" + stripDefaultPort(scheme, hostport), nil
}

func stripDefaultPort(scheme, hostport string) string {
	switch {
	case (scheme == "http" || scheme == "ws") && strings.HasSuffix(hostport, ":80"):
		return strings.TrimSuffix(hostport, ":80")
	case (scheme == "https" || scheme == "wss") && strings.HasSuffix(hostport, ":443"):
		return strings.TrimSuffix(hostport, ":443")
	}
	return hostport
}

type nopHooks struct{}

func (nopHooks) ConnOpened()                  {}
func (nopHooks) ConnClosed(int)               {}
func (nopHooks) HandshakeRefused(int, string) {}
func (nopHooks) FramesWritten(int, int)       {}
func (nopHooks) WriteError()                  {}
func (nopHooks) SlowClosed(string)            {}
