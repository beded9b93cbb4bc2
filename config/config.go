// Package config holds every notifybridge setting: its default, its flag,
// environment variable and YAML key, and its validation. Precedence is flag
// over environment (BRIDGE_NAME) over file (--config) over default, done by
// github.com/peterbourgon/ff/v3.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffyaml"
)

// EnvPrefix prefixes every setting's environment variable.
const EnvPrefix = "BRIDGE"

// Auth modes.
const (
	AuthJWT  = "jwt"
	AuthNone = "none"
)

// Config is the effective configuration of one node. Construct it with
// Default (or Parse); call Validate before use.
type Config struct {
	Listen      string
	AdminListen string
	RedisURL    string
	Stream      string
	NodeID      string

	Auth             string
	JWTSecret        string
	PublishKey       string
	JWTPublicKeyFile string
	JWTAudience      string
	JWTIssuer        string
	JWTLeeway        Duration
	AllowedOrigins   string

	MaxEventBytes       Size
	MaxRecipients       Int
	MaxGroups           Int
	MaxConnections      Int
	MaxConnectionsPerIP Int
	MaxMessageBytes     Size
	Retention           Retention
	RetentionInterval   Duration
	DeadMaxlen          Int
	ReplayWindow        Size
	WriteTimeout        Duration
	PollTimeout         Duration
	PingInterval        Duration
	HandshakeTimeout    Duration
	CursorInterval      Duration
	ShutdownTimeout     Duration
	ShutdownDelay       Duration
	Workers             Int

	IngestBatch       Int
	IngestBlock       Duration
	AckInterval       Duration
	HandlerRetries    Int
	RedisRetryBackoff Duration
	GroupTTL          Duration
	ReadinessGrace    Duration

	Pprof          Bool
	Demo           Bool
	PresencePublic Bool
	LogLevel       string
	LogFormat      string

	// authExplicit is true when auth was set by the user, not derived.
	authExplicit bool
	// clientOnly skips the serve-only rules (see LoadClient).
	clientOnly bool
}

// Default returns the contract defaults (contract §4).
func Default() *Config {
	c := &Config{}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "notifybridge"
	}
	*c = Config{
		Listen:            ":8080",
		AdminListen:       "127.0.0.1:9090",
		Stream:            "notifications",
		NodeID:            host,
		MaxEventBytes:     NewSize(65536),
		MaxRecipients:     NewInt(1000),
		MaxGroups:         NewInt(100),
		MaxConnections:    NewInt(100000),
		MaxMessageBytes:   NewSize(4 << 10),
		Retention:         Retention{MaxAge: 24 * time.Hour},
		RetentionInterval: NewDuration(time.Minute),
		DeadMaxlen:        NewInt(100000),
		ReplayWindow:      NewSize(64 << 20),
		WriteTimeout:      NewDuration(10 * time.Second),
		PollTimeout:       NewDuration(25 * time.Second),
		PingInterval:      NewDuration(25 * time.Second),
		HandshakeTimeout:  NewDuration(5 * time.Second),
		CursorInterval:    NewDuration(30 * time.Second),
		ShutdownTimeout:   NewDuration(10 * time.Second),
		IngestBatch:       NewInt(256),
		IngestBlock:       NewDuration(2 * time.Second),
		AckInterval:       NewDuration(20 * time.Millisecond),
		HandlerRetries:    NewInt(5),
		RedisRetryBackoff: NewDuration(5 * time.Second),
		// Retired nodes' groups go after a week idle (README): long enough
		// for any planned downtime; a node back after that warms its window
		// and recreates its group at the head, losing nothing.
		GroupTTL:  NewDuration(7 * 24 * time.Hour),
		Pprof:     Bool{B: true},
		LogLevel:  "info",
		LogFormat: "json",
	}
}

// setting describes one setting for flags, env, file, printing and docs.
type setting struct {
	name   string // as users write it in YAML and errors: replay_window
	value  flag.Value
	usage  string
	secret bool
}

func (c *Config) settings() []setting {
	return []setting{
		{"listen", (*stringValue)(&c.Listen), "WebSocket and demo listen address", false},
		{"admin_listen", (*stringValue)(&c.AdminListen), "health, readiness, metrics and pprof listen address (:9090 in containers)", false},
		{"redis_url", (*stringValue)(&c.RedisURL), "redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL; empty starts an embedded in-memory Redis", true},
		{"stream", (*stringValue)(&c.Stream), "stream key events are read from", false},
		{"node_id", (*stringValue)(&c.NodeID), "this node's id; its consumer group is " + GroupPrefix + "<node_id> (default: host name)", false},
		{"auth", (*authValue)(c), "jwt or none (default: jwt when a key or secret is set, none with the embedded Redis)", false},
		{"jwt_secret", (*stringValue)(&c.JWTSecret), "HS256 secret", true},
		{"publish_key", (*stringValue)(&c.PublishKey), "bearer key of POST /v1/publish on listen (off when empty)", true},
		{"jwt_public_key_file", (*stringValue)(&c.JWTPublicKeyFile), "PEM file with RS256/ES256 public keys (a token's kid picks one)", false},
		{"jwt_audience", (*stringValue)(&c.JWTAudience), "required aud claim, when set", false},
		{"jwt_issuer", (*stringValue)(&c.JWTIssuer), "required iss claim, when set", false},
		{"jwt_leeway", &c.JWTLeeway, "clock skew allowed for exp and nbf", false},
		{"allowed_origins", (*stringValue)(&c.AllowedOrigins), "comma-separated full origins, or *; empty allows only the request's own host", false},
		{"max_event_bytes", &c.MaxEventBytes, "largest data field accepted", false},
		{"max_recipients", &c.MaxRecipients, "most items in an entry's to", false},
		{"max_groups", &c.MaxGroups, "most groups per connection", false},
		{"max_connections", &c.MaxConnections, "most WebSocket connections on this node", false},
		{"max_connections_per_ip", &c.MaxConnectionsPerIP, "most connections from one IP (0: no limit)", false},
		{"max_message_bytes", &c.MaxMessageBytes, "largest client frame (larger: close 1009)", false},
		{"retention", &c.Retention, "stream bound the bridge applies: a duration (MINID), an entry count (MAXLEN ~) or off", false},
		{"retention_interval", &c.RetentionInterval, "how often retention is applied", false},
		{"dead_maxlen", &c.DeadMaxlen, "approximate length bound of <stream>:dead", false},
		{"replay_window", &c.ReplayWindow, "memory kept of the newest events, already encoded", false},
		{"write_timeout", &c.WriteTimeout, "close a connection whose writes make no progress this long", false},
		{"ping_interval", &c.PingInterval, "server ping interval; a peer silent for two intervals is closed", false},
		{"poll_timeout", &c.PollTimeout, "longest a GET /poll waits for an event before it is answered without", false},
		{"handshake_timeout", &c.HandshakeTimeout, "time allowed for the whole HTTP upgrade", false},
		{"cursor_interval", &c.CursorInterval, "silence after which a connection gets a cursor frame", false},
		{"shutdown_timeout", &c.ShutdownTimeout, "time allowed for a graceful stop", false},
		{"shutdown_delay", &c.ShutdownDelay, "time not-ready before connections are closed on stop (0 allowed)", false},
		{"workers", &c.Workers, "WebSocket worker pool size (0: max(4, 2 × GOMAXPROCS))", false},
		{"ingest_batch", &c.IngestBatch, "entries per XREADGROUP", false},
		{"ingest_block", &c.IngestBlock, "XREADGROUP BLOCK time", false},
		{"ack_interval", &c.AckInterval, "longest an acknowledged entry waits for its batched XACK", false},
		{"handler_retries", &c.HandlerRetries, "attempts for an entry whose handling fails before it is dead-lettered", false},
		{"redis_retry_backoff", &c.RedisRetryBackoff, "longest wait between Redis reconnection attempts", false},
		{"group_ttl", &c.GroupTTL, "delete other nodes' " + GroupPrefix + "* groups whose consumers were all idle this long (0: never)", false},
		{"readiness_grace", &c.ReadinessGrace, "Redis may go unanswered this long before /readyz turns 503 (0: at the first failed probe)", false},
		{"pprof", &c.Pprof, "serve /debug/pprof/ on admin_listen", false},
		{"demo", &c.Demo, "serve the demo page at /demo (needs auth=none; default on only with the embedded Redis)", false},
		{"presence_public", &c.PresencePublic, "also answer GET /v1/presence on listen, to callers with a valid token as for /ws (needs auth=jwt)", false},
		{"log_level", (*stringValue)(&c.LogLevel), "debug, info, warn or error", false},
		{"log_format", (*stringValue)(&c.LogFormat), "json or console", false},
	}
}

// FlagName turns a setting name into its flag: replay_window → replay-window.
func FlagName(setting string) string { return strings.ReplaceAll(setting, "_", "-") }

// EnvName turns a setting name into its environment variable: BRIDGE_REPLAY_WINDOW.
func EnvName(setting string) string { return EnvPrefix + "_" + strings.ToUpper(setting) }

// Register adds every setting to fs as a flag, plus --config.
func (c *Config) Register(fs *flag.FlagSet) {
	for _, s := range c.settings() {
		fs.Var(s.value, FlagName(s.name), s.usage+" (env "+EnvName(s.name)+")")
	}
	fs.String("config", "", "YAML file with settings (keys as in the README, e.g. replay_window)")
}

// Parse reads flags from args, then BRIDGE_* variables, then the --config
// file, into fs (which must have been Registered). It does not validate: a
// value that does not parse is kept for Validate to report with the others.
func Parse(fs *flag.FlagSet, args []string) error {
	err := ff.Parse(fs, args,
		ff.WithEnvVarPrefix(EnvPrefix),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(yamlParser),
	)
	return err
}

// yamlParser accepts both replay_window and replay-window keys.
func yamlParser(r io.Reader, set func(name, value string) error) error {
	return ffyaml.Parser(r, func(name, value string) error {
		return set(FlagName(name), value)
	})
}

// Load is Default + Register + Parse + Validate, for serve and config.
func Load(name string, args []string, output io.Writer, extra func(*flag.FlagSet)) (*Config, *flag.FlagSet, error) {
	return load(Default(), name, args, output, extra)
}

// LoadClient is Load for commands that only talk to Redis or the admin
// server (publish, healthcheck): the serve-only rules on auth and demo do not
// apply to them.
func LoadClient(name string, args []string, output io.Writer, extra func(*flag.FlagSet)) (*Config, *flag.FlagSet, error) {
	c := Default()
	c.clientOnly = true
	return load(c, name, args, output, extra)
}

func load(c *Config, name string, args []string, output io.Writer, extra func(*flag.FlagSet)) (*Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	c.Register(fs)
	if extra != nil {
		extra(fs)
	}
	if err := Parse(fs, args); err != nil {
		return nil, fs, err
	}
	if fs.NArg() > 0 {
		return nil, fs, fmt.Errorf("unexpected argument %q (settings are flags such as --replay-window=64MiB)", fs.Arg(0))
	}
	if err := c.Validate(); err != nil {
		return nil, fs, err
	}
	c.settle()
	return c, fs, nil
}

// Validate checks every setting and returns one error per bad setting,
// each starting with the setting's name as users write it, joined with
// errors.Join. It does not change c: auth and demo are judged by the values
// they take when unset (contract §2), which Load then writes (settle).
func (c *Config) Validate() error {
	var errs []error
	// failed holds the settings already reported: a setting gets one error,
	// and checks that build on a bad setting (replay_window against
	// max_event_bytes) are skipped.
	failed := map[string]bool{}
	bad := func(name string, err error) {
		if !failed[name] {
			failed[name] = true
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}

	for _, s := range c.settings() {
		if e, ok := s.value.(interface{ parseErr() error }); ok && e.parseErr() != nil {
			bad(s.name, e.parseErr())
		}
	}
	for _, a := range []struct {
		name string
		addr string
	}{{"listen", c.Listen}, {"admin_listen", c.AdminListen}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			bad(a.name, fmt.Errorf("must be host:port or :port, got %q", a.addr))
		}
	}
	if c.RedisURL != "" {
		if err := checkRedisURL(c.RedisURL); err != nil {
			bad("redis_url", err)
		}
	}
	if c.Stream == "" || strings.ContainsAny(c.Stream, " \t\r\n") {
		bad("stream", fmt.Errorf("must be a non-empty key without whitespace, got %q", c.Stream))
	}
	if c.NodeID == "" || len(c.NodeID) > 200 || strings.ContainsAny(c.NodeID, " \t\r\n,") {
		bad("node_id", fmt.Errorf("must be 1–200 bytes without whitespace or comma, got %q", c.NodeID))
	}
	positive := []struct {
		name string
		n    int64
	}{
		{"max_event_bytes", c.MaxEventBytes.Bytes}, {"max_recipients", int64(c.MaxRecipients.N)},
		{"max_groups", int64(c.MaxGroups.N)}, {"max_connections", int64(c.MaxConnections.N)},
		{"max_message_bytes", c.MaxMessageBytes.Bytes}, {"dead_maxlen", int64(c.DeadMaxlen.N)},
		{"replay_window", c.ReplayWindow.Bytes}, {"ingest_batch", int64(c.IngestBatch.N)},
		{"handler_retries", int64(c.HandlerRetries.N)},
		{"write_timeout", int64(c.WriteTimeout.Duration)}, {"ping_interval", int64(c.PingInterval.Duration)},
		{"poll_timeout", int64(c.PollTimeout.Duration)},
		{"handshake_timeout", int64(c.HandshakeTimeout.Duration)}, {"cursor_interval", int64(c.CursorInterval.Duration)},
		{"shutdown_timeout", int64(c.ShutdownTimeout.Duration)}, {"ingest_block", int64(c.IngestBlock.Duration)},
		{"ack_interval", int64(c.AckInterval.Duration)}, {"retention_interval", int64(c.RetentionInterval.Duration)},
		{"redis_retry_backoff", int64(c.RedisRetryBackoff.Duration)},
	}
	for _, p := range positive {
		if p.n <= 0 {
			bad(p.name, errNotPositive)
		}
	}
	nonNegative := []struct {
		name string
		n    int64
	}{
		{"max_connections_per_ip", int64(c.MaxConnectionsPerIP.N)}, {"workers", int64(c.Workers.N)},
		{"shutdown_delay", int64(c.ShutdownDelay.Duration)}, {"jwt_leeway", int64(c.JWTLeeway.Duration)},
		{"group_ttl", int64(c.GroupTTL.Duration)}, {"readiness_grace", int64(c.ReadinessGrace.Duration)},
	}
	for _, p := range nonNegative {
		if p.n < 0 {
			bad(p.name, errors.New("must be >= 0"))
		}
	}
	if c.IngestBlock.Duration > 0 && c.IngestBlock.Duration < time.Millisecond {
		// XREADGROUP BLOCK counts milliseconds; 0 would block for ever.
		bad("ingest_block", fmt.Errorf("must be at least 1ms, got %s", c.IngestBlock.String()))
	}
	if c.MaxEventBytes.Bytes > maxEventBytesLimit {
		bad("max_event_bytes", fmt.Errorf("must be at most %s, got %s", FormatSize(maxEventBytesLimit), c.MaxEventBytes.String()))
	}
	if !failed["replay_window"] && !failed["max_event_bytes"] && c.ReplayWindow.Bytes < 4*c.MaxEventBytes.Bytes {
		bad("replay_window", fmt.Errorf("must hold at least four of the largest events (4 × max_event_bytes = %s), got %s",
			FormatSize(4*c.MaxEventBytes.Bytes), c.ReplayWindow.String()))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", fmt.Errorf("must be debug, info, warn or error, got %q", c.LogLevel))
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		bad("log_format", fmt.Errorf("must be json or console, got %q", c.LogFormat))
	}
	if err := checkOrigins(c.AllowedOrigins); err != nil {
		bad("allowed_origins", err)
	}
	if c.JWTPublicKeyFile != "" {
		if _, err := os.Stat(c.JWTPublicKeyFile); err != nil {
			bad("jwt_public_key_file", fmt.Errorf("cannot be read: %v", err))
		}
	}
	auth, err := c.effectiveAuth()
	if err != nil && !c.clientOnly {
		bad("auth", err)
	}
	if c.effectiveDemo(auth) && auth != AuthNone && !c.clientOnly {
		bad("demo", errors.New("may be on only with auth=none (it publishes without credentials)"))
	}
	if c.PresencePublic.B && auth == AuthNone && !failed["auth"] && !c.clientOnly {
		bad("presence_public", errors.New("needs auth=jwt: on listen a caller proves who it is with a token, and auth=none has none (ask admin_listen instead)"))
	}
	return errors.Join(errs...)
}

// maxEventBytesLimit bounds max_event_bytes: one event is one WebSocket frame
// every connection may be sent, and the window keeps at least four.
const maxEventBytesLimit = 16 << 20

// settle writes the values auth and demo take when unset, so the node reads
// them as plain fields. Load calls it once the settings parsed.
func (c *Config) settle() {
	if auth, err := c.effectiveAuth(); err == nil {
		c.Auth = auth
	}
	c.Demo.B = c.effectiveDemo(c.Auth)
}

// effectiveAuth is auth, or the mode contract §2 derives when it is unset.
func (c *Config) effectiveAuth() (string, error) {
	hasKey := c.JWTSecret != "" || c.JWTPublicKeyFile != ""
	switch c.Auth {
	case AuthJWT:
		if !hasKey {
			return c.Auth, errors.New("jwt needs jwt_secret or jwt_public_key_file")
		}
		return c.Auth, nil
	case AuthNone:
		return c.Auth, nil
	case "":
		switch {
		case hasKey:
			return AuthJWT, nil
		case c.RedisURL == "":
			return AuthNone, nil
		}
		return "", errors.New("not set, and neither jwt_secret nor jwt_public_key_file is set: with an external Redis " +
			"set a key (auth=jwt), or set auth=none explicitly for development")
	}
	return c.Auth, fmt.Errorf("must be jwt or none, got %q", c.Auth)
}

// effectiveDemo is demo, or, when unset, on for the zero-setup run only
// (embedded Redis, auth none).
func (c *Config) effectiveDemo(auth string) bool {
	if c.Demo.raw != "" {
		return c.Demo.B
	}
	return c.Embedded() && auth == AuthNone
}

// AuthExplicit reports whether auth was given by the user rather than derived.
func (c *Config) AuthExplicit() bool { return c.authExplicit }

// Embedded reports whether the node runs its own in-memory Redis.
func (c *Config) Embedded() bool { return c.RedisURL == "" }

// GroupPrefix starts the name of every node's consumer group (contract §4:
// notifybridge-<node_id>); group_ttl expires only groups with this prefix.
const GroupPrefix = "notifybridge-"

// Group is the node's consumer group, GroupPrefix + node_id.
func (c *Config) Group() string { return GroupPrefix + c.NodeID }

// DeadStream is the dead-letter stream.
func (c *Config) DeadStream() string { return c.Stream + ":dead" }

// Origins splits allowed_origins.
func (c *Config) Origins() []string {
	var out []string
	for _, o := range strings.Split(c.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, strings.TrimSuffix(o, "/"))
		}
	}
	return out
}

func checkOrigins(list string) error {
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" || o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("%q is not a full origin such as https://app.example or http://localhost:3000", o)
		}
	}
	return nil
}

func checkRedisURL(raw string) error {
	// The node opens its client with the same parser, so what passes here opens.
	_, err := ParseRedisURL(raw)
	return err
}

// Print writes the effective configuration as YAML, secrets redacted.
func (c *Config) Print(w io.Writer) {
	ss := c.settings()
	for _, s := range ss {
		v := s.value.String()
		switch {
		case s.name == "redis_url" && v != "":
			v = RedactURL(v)
		case s.secret && v != "":
			v = "[redacted]"
		}
		fmt.Fprintf(w, "%s: %q\n", s.name, v)
	}
}

// Names lists every setting name, for docs and tests.
func (c *Config) Names() []string {
	var out []string
	for _, s := range c.settings() {
		out = append(out, s.name)
	}
	return out
}

type stringValue string

func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }
func (s *stringValue) String() string {
	if s == nil {
		return ""
	}
	return string(*s)
}

// authValue records that auth was set explicitly.
type authValue Config

func (a *authValue) Set(v string) error {
	a.Auth, a.authExplicit = strings.TrimSpace(v), true
	return nil
}

func (a *authValue) String() string {
	if a == nil {
		return ""
	}
	return a.Auth
}

func (s *Size) parseErr() error      { return s.err }
func (d *Duration) parseErr() error  { return d.err }
func (i *Int) parseErr() error       { return i.err }
func (b *Bool) parseErr() error      { return b.err }
func (r *Retention) parseErr() error { return r.err }
