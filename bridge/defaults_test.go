package bridge_test

import (
	"testing"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/config"
)

// A field the node fills from a setting defaults, when zero, to that
// setting's documented default: a library user (publisher, bench, tests)
// gets the number the README states, not a second opinion. (An external test
// package: config imports bridge for Limits.)
func TestDefaultsAreTheSettings(t *testing.T) {
	doc := config.Default()
	for _, p := range []struct {
		setting   string
		got, want any
	}{
		{"replay_window", int64(bridge.DefaultWindowBytes), doc.ReplayWindow.Bytes},
		{"cursor_interval", bridge.DefaultCursorInterval, doc.CursorInterval.Duration},
		{"max_event_bytes, max_recipients (DefaultLimits)", bridge.DefaultLimits, doc.Limits()},
	} {
		if p.got != p.want {
			t.Errorf("%s: the zero value means %v, the documented default is %v", p.setting, p.got, p.want)
		}
	}
}
