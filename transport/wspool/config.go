package wspool

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Config configures a Server. Zero values take the defaults of contract §4;
// New calls setDefaults and then Validate.
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
		c.Listen = ":8080"
	}
	if c.MaxGroups == 0 {
		c.MaxGroups = 100
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 100000
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = 4096
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 4096
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 8192
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.CloseGrace == 0 {
		c.CloseGrace = 2 * time.Second
	}
	if c.Workers == 0 {
		c.Workers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if c.MaxWriteBatch == 0 {
		c.MaxWriteBatch = 64 << 10
	}
	if c.Hooks == nil {
		c.Hooks = nopHooks{}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate reports the first invalid setting, named as users write it.
func (c *Config) Validate() error {
	positive := []struct {
		name string
		v    int64
	}{
		{"max_groups", int64(c.MaxGroups)},
		{"max_connections", int64(c.MaxConnections)},
		{"max_handshakes", int64(c.MaxHandshakes)},
		{"max_message_bytes", int64(c.MaxMessageBytes)},
		{"max_header_bytes", int64(c.MaxHeaderBytes)},
		{"handshake_timeout", int64(c.HandshakeTimeout)},
		{"ping_interval", int64(c.PingInterval)},
		{"write_timeout", int64(c.WriteTimeout)},
		{"close_grace", int64(c.CloseGrace)},
		{"workers", int64(c.Workers)},
		{"max_write_batch", int64(c.MaxWriteBatch)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("%s: must be > 0", p.name)
		}
	}
	if c.MaxConnectionsPerIP < 0 {
		return errors.New("max_connections_per_ip: must be >= 0")
	}
	if c.MaxHeaderBytes < 256 {
		return errors.New("max_header_bytes: must be >= 256")
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if _, err := normalizeOrigin(o); err != nil {
			return fmt.Errorf("allowed_origins: %q: %v", o, err)
		}
	}
	if c.Auth == nil {
		return errors.New("auth: no authenticator")
	}
	if c.Accept == nil {
		return errors.New("wspool: Accept is required")
	}
	if c.ValidateName == nil {
		return errors.New("wspool: ValidateName is required")
	}
	return nil
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
