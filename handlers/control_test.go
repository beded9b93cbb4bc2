package handlers

import (
	"errors"
	"strings"
	"testing"

	"github.com/notifybridge/notifybridge/bridge"
)

func TestDecodeControl(t *testing.T) {
	cases := []struct {
		name   string
		fields map[string]string
		reason string // "" means the entry is a good control entry
	}{
		{"disconnect", map[string]string{"to": "user:42", "control": "disconnect"}, ""},
		{"with reason", map[string]string{"to": "user:42,group:ops", "control": "disconnect", "reason": "logged out"}, ""},
		{"broadcast", map[string]string{"to": "*", "control": "disconnect"}, ""},
		{"unknown control", map[string]string{"to": "user:1", "control": "mute"}, `control: "mute" is not a known control`},
		{"empty control", map[string]string{"to": "user:1", "control": ""}, `control: "" is not a known control`},
		{"missing to", map[string]string{"control": "disconnect"}, "to: field is missing"},
		{"bad to", map[string]string{"to": "team:x", "control": "disconnect"}, `to: item "team:x"`},
		{"data given", map[string]string{"to": "user:1", "control": "disconnect", "data": "{}"}, "control: entry has a data field"},
		{"two-line reason", map[string]string{"to": "user:1", "control": "disconnect", "reason": "a\nb"}, "reason: contains a control character"},
		{"long reason", map[string]string{"to": "user:1", "control": "disconnect", "reason": strings.Repeat("r", 201)}, "reason: is 201 bytes"},
		{"bad UTF-8 reason", map[string]string{"to": "user:1", "control": "disconnect", "reason": "\xff"}, "reason: is not valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := DecodeEntry(testID, tc.fields, bridge.DefaultLimits)
			if tc.reason == "" {
				if err != nil || ev == nil || ev.Control == nil || ev.Frame != nil {
					t.Fatalf("got %+v, %v; want a control entry without a frame", ev, err)
				}
				return
			}
			var bad *bridge.BadEntryError
			if !errors.As(err, &bad) {
				t.Fatalf("got %v (%T), want a *bridge.BadEntryError", err, err)
			}
			if !strings.HasPrefix(bad.Reason, tc.reason) || strings.ContainsAny(bad.Reason, "\r\n") {
				t.Fatalf("reason %q, want prefix %q", bad.Reason, tc.reason)
			}
		})
	}
}
