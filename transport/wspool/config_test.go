package wspool

import (
	"testing"

	"github.com/notifybridge/notifybridge/config"
)

// A field the node fills from a setting defaults, when zero, to that
// setting's documented default: a library user (bench, tests) gets the
// number the README states, not a second opinion.
func TestDefaultsAreTheSettings(t *testing.T) {
	doc := config.Default()
	var c Config
	c.setDefaults()
	for _, p := range []struct {
		setting   string
		got, want any
	}{
		{"listen", c.Listen, doc.Listen},
		{"max_groups", c.MaxGroups, doc.MaxGroups.N},
		{"max_connections", c.MaxConnections, doc.MaxConnections.N},
		{"max_connections_per_ip (0: off)", c.MaxConnectionsPerIP, doc.MaxConnectionsPerIP.N},
		{"max_message_bytes", int64(c.MaxMessageBytes), doc.MaxMessageBytes.Bytes},
		{"handshake_timeout", c.HandshakeTimeout, doc.HandshakeTimeout.Duration},
		{"ping_interval", c.PingInterval, doc.PingInterval.Duration},
		{"write_timeout", c.WriteTimeout, doc.WriteTimeout.Duration},
		{"poll_timeout", c.PollTimeout, doc.PollTimeout.Duration},
		{"workers (0: auto)", doc.Workers.N, 0},
	} {
		if p.got != p.want {
			t.Errorf("%s: zero Config means %v, the documented default is %v", p.setting, p.got, p.want)
		}
	}
}
