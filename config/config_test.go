package config

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func loadT(t *testing.T, args []string, env map[string]string, file string) (*Config, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	if file != "" {
		p := filepath.Join(t.TempDir(), "bridge.yaml")
		if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", p}, args...)
	}
	c, _, err := Load("test", args, io.Discard, nil)
	return c, err
}

func TestPrecedenceFlagOverEnvOverFileOverDefault(t *testing.T) {
	file := "replay_window: 1MiB\nwrite_timeout: 3s\nstream: from-file\nmax-groups: 7\n"
	env := map[string]string{"BRIDGE_WRITE_TIMEOUT": "4s", "BRIDGE_STREAM": "from-env"}
	c, err := loadT(t, []string{"--stream", "from-flag"}, env, file)
	if err != nil {
		t.Fatal(err)
	}
	if c.Stream != "from-flag" {
		t.Errorf("stream = %q, want flag value", c.Stream)
	}
	if c.WriteTimeout.Duration != 4*time.Second {
		t.Errorf("write_timeout = %v, want env value 4s", c.WriteTimeout.Duration)
	}
	if c.ReplayWindow.Bytes != 1<<20 {
		t.Errorf("replay_window = %d, want file value 1MiB", c.ReplayWindow.Bytes)
	}
	if c.MaxGroups.N != 7 {
		t.Errorf("max_groups = %d, want file value (dashed key) 7", c.MaxGroups.N)
	}
	if c.CursorInterval.Duration != 30*time.Second {
		t.Errorf("cursor_interval = %v, want default 30s", c.CursorInterval.Duration)
	}
}

func TestDefaultsMatchContract(t *testing.T) {
	c, err := loadT(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"listen", c.Listen, ":8080"},
		{"admin_listen", c.AdminListen, "127.0.0.1:9090"},
		{"stream", c.Stream, "notifications"},
		{"max_event_bytes", c.MaxEventBytes.Bytes, int64(65536)},
		{"max_recipients", c.MaxRecipients.N, 1000},
		{"max_groups", c.MaxGroups.N, 100},
		{"retention", c.Retention.MaxAge, 24 * time.Hour},
		{"replay_window", c.ReplayWindow.Bytes, int64(64 << 20)},
		{"write_timeout", c.WriteTimeout.Duration, 10 * time.Second},
		{"ping_interval", c.PingInterval.Duration, 25 * time.Second},
		{"poll_timeout", c.PollTimeout.Duration, 25 * time.Second},
		{"handshake_timeout", c.HandshakeTimeout.Duration, 5 * time.Second},
		{"max_connections", c.MaxConnections.N, 100000},
		{"max_message_bytes", c.MaxMessageBytes.Bytes, int64(4096)},
		{"cursor_interval", c.CursorInterval.Duration, 30 * time.Second},
		{"shutdown_timeout", c.ShutdownTimeout.Duration, 10 * time.Second},
		{"shutdown_delay", c.ShutdownDelay.Duration, time.Duration(0)},
		{"readiness_grace", c.ReadinessGrace.Duration, time.Duration(0)},
		{"dead_maxlen", c.DeadMaxlen.N, 100000},
		{"pprof", c.Pprof.B, true},
		{"auth (embedded, no key)", c.Auth, AuthNone},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	host, _ := os.Hostname()
	if host != "" && c.NodeID != host {
		t.Errorf("node_id = %q, want host name %q", c.NodeID, host)
	}
}

func TestValidationNamesEachBadSetting(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--replay-window", "-5"}, `replay_window: must be a positive size such as 65536, 512KiB or 64MiB, got "-5"`},
		{[]string{"--replay-window", "0"}, "replay_window: must be > 0"},
		{[]string{"--replay-window", "lots"}, `replay_window: must be a positive size`},
		{[]string{"--write-timeout", "10"}, `write_timeout: must be a duration such as 10s or 1m30s, got "10"`},
		{[]string{"--write-timeout", "0s"}, "write_timeout: must be > 0"},
		{[]string{"--max-connections", "many"}, `max_connections: must be a whole number, got "many"`},
		{[]string{"--max-groups", "0"}, "max_groups: must be > 0"},
		{[]string{"--max-connections-per-ip", "-1"}, "max_connections_per_ip: must be >= 0"},
		{[]string{"--shutdown-delay", "-1s"}, "shutdown_delay: must be >= 0"},
		{[]string{"--readiness-grace", "-1s"}, "readiness_grace: must be >= 0"},
		{[]string{"--readiness-grace", "3"}, `readiness_grace: must be a duration such as 10s or 1m30s, got "3"`},
		{[]string{"--retention", "forever"}, "retention: must be a duration such as 24h"},
		{[]string{"--retention", "0"}, "retention: must be > 0"},
		{[]string{"--log-level", "loud"}, `log_level: must be debug, info, warn or error, got "loud"`},
		{[]string{"--log-format", "xml"}, `log_format: must be json or console, got "xml"`},
		{[]string{"--listen", "8080"}, `listen: must be host:port or :port, got "8080"`},
		{[]string{"--redis-url", "http://x"}, `redis_url: scheme must be redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://`},
		{[]string{"--redis-url", "unix://"}, `redis_url: needs a socket path`},
		{[]string{"--redis-url", "redis+sentinel://h:26379"}, `redis_url: needs the master name as the path`},
		{[]string{"--redis-url", "redis+sentinel://h:26379,h2/m"}, `redis_url: host "h2": want host:port`},
		{[]string{"--redis-url", "redis+sentinel://h:26379/m/x"}, `redis_url: database "x": want a number >= 0`},
		{[]string{"--redis-url", "redis+cluster://h:7000/0"}, `redis_url: takes no path`},
		{[]string{"--redis-url", "redis+cluster://"}, `redis_url: needs at least one host:port`},
		{[]string{"--redis-url", "redis+cluster://h:7000?bogus=1"}, `redis_url: options: unexpected option: bogus`},
		{[]string{"--redis-url", "redis+cluster://h:7000?addr=h:7001"}, `redis_url: option addr belongs in the URL itself`},
		{[]string{"--allowed-origins", "app.example"}, `allowed_origins: "app.example" is not a full origin`},
		{[]string{"--auth", "basic"}, `auth: must be jwt or none, got "basic"`},
		{[]string{"--auth", "jwt"}, "auth: jwt needs jwt_secret or jwt_public_key_file"},
		{[]string{"--redis-url", "redis://127.0.0.1:1"}, "auth: not set, and neither jwt_secret nor jwt_public_key_file is set"},
		{[]string{"--jwt-public-key-file", "/nonexistent.pem"}, "jwt_public_key_file: cannot be read"},
		{[]string{"--pprof=maybe"}, `pprof: must be true or false, got "maybe"`},
		{[]string{"--demo", "--redis-url", "redis://x:1", "--jwt-secret", "s"}, "demo: may be on only with auth=none"},
		{[]string{"--max-event-bytes", "1MiB", "--replay-window", "1MiB"}, "replay_window: must hold at least four of the largest events"},
		{[]string{"--node-id", "a b"}, `node_id: must be 1–200 bytes without whitespace or comma`},
		{[]string{"--ingest-block", "500us"}, `ingest_block: must be at least 1ms, got 500µs`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := loadT(t, tc.args, nil, "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidationReportsEveryBadSettingAtOnce(t *testing.T) {
	_, err := loadT(t, []string{"--replay-window", "0", "--write-timeout", "x", "--log-format", "xml"}, nil, "")
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("want one line per bad setting, got %q", err.Error())
	}
}

func TestAuthRule(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"embedded defaults to none", nil, AuthNone},
		{"secret defaults to jwt", []string{"--jwt-secret", "s3cret"}, AuthJWT},
		{"external with secret", []string{"--redis-url", "redis://h:6379", "--jwt-secret", "s"}, AuthJWT},
		{"explicit none honoured with external redis", []string{"--redis-url", "redis://h:6379", "--auth", "none"}, AuthNone},
		{"explicit none honoured with a secret", []string{"--jwt-secret", "s", "--auth", "none"}, AuthNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadT(t, tc.args, nil, "")
			if err != nil {
				t.Fatal(err)
			}
			if c.Auth != tc.want {
				t.Fatalf("auth = %q, want %q", c.Auth, tc.want)
			}
		})
	}
}

func TestUnknownFileKeyIsAnError(t *testing.T) {
	_, err := loadT(t, nil, nil, "replay_windw: 1MiB\n")
	if err == nil || !strings.Contains(err.Error(), "replay-windw") {
		t.Fatalf("error = %v, want it to name the unknown key", err)
	}
}

func TestPrintRedactsSecrets(t *testing.T) {
	c, err := loadT(t, []string{"--jwt-secret", "hunter2", "--redis-url", "redis://user:p4ss@h:6379/0"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c.Print(&buf)
	out := buf.String()
	for _, secret := range []string{"hunter2", "p4ss"} {
		if strings.Contains(out, secret) {
			t.Errorf("printed config shows secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{`jwt_secret: "[redacted]"`, `redis_url: "redis://user:xxxxx@h:6379/0"`, `replay_window: "64MiB"`} {
		if !strings.Contains(out, want) {
			t.Errorf("printed config lacks %s:\n%s", want, out)
		}
	}
}

func TestEverySettingHasFlagAndEnv(t *testing.T) {
	c := Default()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.Register(fs)
	for _, name := range c.Names() {
		if fs.Lookup(FlagName(name)) == nil {
			t.Errorf("setting %s has no flag", name)
		}
	}
	contract := []string{"listen", "admin_listen", "redis_url", "stream", "node_id", "auth", "jwt_secret",
		"jwt_public_key_file", "allowed_origins", "max_event_bytes", "retention", "replay_window", "write_timeout",
		"log_level", "log_format"}
	names := strings.Join(c.Names(), " ")
	for _, n := range contract {
		if !strings.Contains(" "+names+" ", " "+n+" ") {
			t.Errorf("contract setting %s missing", n)
		}
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"65536", 65536, true}, {"64KiB", 64 << 10, true}, {"1MiB", 1 << 20, true}, {"2GiB", 2 << 30, true},
		{"10kB", 10000, true}, {"5MB", 5e6, true}, {"12B", 12, true}, {"-5", 0, false}, {"", 0, false},
		{"1.5MiB", 0, false}, {"99999999999GiB", 0, false},
	}
	for _, tc := range cases {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestDemoDefault(t *testing.T) {
	cases := []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"--demo=false"}, false},
		{[]string{"--redis-url", "redis://h:1", "--auth", "none"}, false},
		{[]string{"--redis-url", "redis://h:1", "--auth", "none", "--demo"}, true},
		{[]string{"--jwt-secret", "s"}, false},
	}
	for _, tc := range cases {
		c, err := loadT(t, tc.args, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if c.Demo.B != tc.want {
			t.Errorf("%v: demo = %v, want %v", tc.args, c.Demo.B, tc.want)
		}
	}
}

func TestPrintRedactsSentinelPassword(t *testing.T) {
	c, err := loadT(t, []string{"--jwt-secret", "s", "--redis-url", "redis+sentinel://:p4ss@h1:26379,h2:26379/mymaster?sentinel_password=s3ntinel"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c.Print(&buf)
	for _, secret := range []string{"p4ss", "s3ntinel"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("printed config shows %q:\n%s", secret, buf.String())
		}
	}
}

// readiness_grace reaches the node from each source like every setting.
func TestReadinessGraceSources(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		file string
	}{
		{args: []string{"--readiness-grace", "5s"}},
		{env: map[string]string{"BRIDGE_READINESS_GRACE": "5s"}},
		{file: "readiness_grace: 5s\n"},
	} {
		c, err := loadT(t, tc.args, tc.env, tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if c.ReadinessGrace.Duration != 5*time.Second {
			t.Errorf("%+v: readiness_grace = %v, want 5s", tc, c.ReadinessGrace.Duration)
		}
		var b strings.Builder
		c.Print(&b)
		if !strings.Contains(b.String(), `readiness_grace: "5s"`) {
			t.Errorf("config output lacks readiness_grace:\n%s", b.String())
		}
	}
}

// Validate only judges: the values auth and demo take when unset are written
// by Load, never by Validate, so validating twice (or a config a library
// built) sees what the caller set.
func TestValidateDoesNotChangeConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"embedded, auth and demo unset", func(*Config) {}},
		{"secret, auth unset", func(c *Config) { c.JWTSecret = "s" }},
		{"external, nothing set (invalid)", func(c *Config) { c.RedisURL = "redis://h:1" }},
		{"several bad settings", func(c *Config) {
			c.ReplayWindow = NewSize(0)
			_ = c.WriteTimeout.Set("x")
			c.LogFormat = "xml"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.set(c)
			before := *c
			first := c.Validate()
			if !reflect.DeepEqual(before, *c) {
				t.Fatalf("Validate changed the config:\nbefore %+v\nafter  %+v", before, *c)
			}
			if second := c.Validate(); fmt.Sprint(first) != fmt.Sprint(second) {
				t.Fatalf("second Validate = %v, first %v", second, first)
			}
		})
	}
}

// Load writes the derived auth and demo once the settings are valid.
func TestLoadSettlesAuthAndDemo(t *testing.T) {
	c, err := loadT(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth != AuthNone || !c.Demo.B {
		t.Fatalf("auth %q demo %v, want none and on for the zero-setup run", c.Auth, c.Demo.B)
	}
}

// A setting that fails to parse gets that one error, not also "must be > 0"
// for the zero it parsed to; a check built on it (replay_window against
// max_event_bytes) is skipped.
func TestOneErrorPerBadSetting(t *testing.T) {
	_, err := loadT(t, []string{"--max-event-bytes", "lots", "--replay-window", "x"}, nil, "")
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "max_event_bytes: must be a positive size") ||
		!strings.HasPrefix(lines[1], "replay_window: must be a positive size") {
		t.Fatalf("want one parse error each for max_event_bytes and replay_window, got %q", err.Error())
	}
}

func TestGroup(t *testing.T) {
	c := Default()
	c.NodeID = "n1"
	if got := c.Group(); got != "notifybridge-n1" {
		t.Fatalf("Group() = %q, want notifybridge-n1 (contract §4)", got)
	}
}

// presence_public: a bool, and only with auth=jwt (on listen a caller
// proves who it is with a token); the error names the setting.
func TestPresencePublicSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" loads
	}{
		{[]string{"--presence-public=maybe"}, `presence_public: must be true or false, got "maybe"`},
		{[]string{"--presence-public"}, "presence_public: needs auth=jwt"},
		{[]string{"--presence-public", "--redis-url", "redis://x:1", "--auth", "none"}, "presence_public: needs auth=jwt"},
		{[]string{"--presence-public", "--jwt-secret", "s"}, ""},
		{[]string{"--jwt-secret", "s"}, ""},
	} {
		c, err := loadT(t, tc.args, nil, "")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		case tc.want == "" && c.PresencePublic.B != slices.Contains(tc.args, "--presence-public"):
			t.Errorf("%v: presence_public = %v", tc.args, c.PresencePublic.B)
		}
	}
	c, err := loadT(t, nil, nil, "presence_public: true\njwt_secret: s\n")
	if err != nil || !c.PresencePublic.B {
		t.Fatalf("from the file: %v", err)
	}
}
