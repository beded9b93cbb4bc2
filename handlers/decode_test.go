package handlers

import (
	"errors"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/notifybridge/notifybridge/bridge"
	"github.com/vmihailenco/msgpack/v5"
)

var testID = bridge.ID{Ms: 1732451234567, Seq: 0}

func TestDecodePlain(t *testing.T) {
	ev, err := DecodeEntry(testID, map[string]string{
		"to": "user:42,group:ops", "type": "alarm.fiber_break", "data": `{"fiber":"F-12","km":3.2}`, "other": "x",
	}, bridge.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"1732451234567-0","type":"alarm.fiber_break","data":{"fiber":"F-12","km":3.2}}`
	if string(ev.Payload()) != want || ev.To != "user:42,group:ops" || ev.ID != testID {
		t.Fatalf("got %s to %q id %v", ev.Payload(), ev.To, ev.ID)
	}
	ev, err = DecodeEntry(testID, map[string]string{"to": "*", "data": "1"}, bridge.DefaultLimits)
	if err != nil || ev.Type != bridge.DefaultType {
		t.Fatalf("default type: %v %v", ev, err)
	}
}

func watermillFields(t testing.TB, md map[string]string, payload string) map[string]string {
	t.Helper()
	f := map[string]string{FieldWatermillUUID: "3f1c", FieldWatermillPayload: payload}
	if md != nil {
		b, err := msgpack.Marshal(md)
		if err != nil {
			t.Fatal(err)
		}
		f[FieldWatermillMetadata] = string(b)
	}
	return f
}

func TestDecodeWatermill(t *testing.T) {
	ev, err := DecodeEntry(testID, watermillFields(t, map[string]string{"to": "group:ops", "type": "t", "x": "y"}, `[1,2]`), bridge.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if string(ev.Data()) != `[1,2]` || ev.Type != "t" || ev.To != "group:ops" {
		t.Fatalf("got %s", ev.Payload())
	}
}

func TestDecodeBadEntries(t *testing.T) {
	lim := bridge.Limits{MaxEventBytes: 16, MaxRecipients: 3}
	exactly := `"` + strings.Repeat("a", 14) + `"` // 16 bytes
	over := `"` + strings.Repeat("a", 15) + `"`    // 17 bytes
	good := func(f map[string]string) map[string]string {
		m := map[string]string{"to": "user:1", "data": "{}"}
		for k, v := range f {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name   string
		fields map[string]string
		reason string // "" means the entry is good
	}{
		{"missing to", map[string]string{"data": "1"}, "to: field is missing"},
		{"missing data", map[string]string{"to": "*"}, "data: field is missing"},
		{"empty to", good(map[string]string{"to": ""}), "to: is empty"},
		{"whitespace in to", good(map[string]string{"to": "user:1, user:2"}), "to: item \" user:2\": want user:<id>, group:<name> or *"},
		{"whitespace in name", good(map[string]string{"to": "user:a\tb"}), "to: user id \"a\\tb\" contains whitespace"},
		{"empty item", good(map[string]string{"to": "user:1,,user:2"}), "to: empty recipient item"},
		{"trailing comma", good(map[string]string{"to": "user:1,"}), "to: empty recipient item"},
		{"empty user id", good(map[string]string{"to": "user:"}), "to: user id \"\" is empty"},
		{"unknown prefix", good(map[string]string{"to": "team:x"}), "to: item \"team:x\": want user:<id>, group:<name> or *"},
		{"max recipients", good(map[string]string{"to": "user:1,user:2,*"}), ""},
		{"too many recipients", good(map[string]string{"to": "user:1,user:2,*,group:g"}), "to: more than 3 recipients"},
		{"long name", good(map[string]string{"to": "group:" + strings.Repeat("g", 257)}), "to: group name \"" + strings.Repeat("g", 64) + "\"… is 257 bytes, at most 256 allowed"},
		{"bad type", good(map[string]string{"type": "a b"}), "type: \"a b\" has byte ' ' at 1, allowed are [A-Za-z0-9._:-]"},
		{"empty type", good(map[string]string{"type": ""}), "type: is empty"},
		{"long type", good(map[string]string{"type": strings.Repeat("t", 129)}), "type: \"" + strings.Repeat("t", 64) + "\"… is 129 bytes, at most 128 allowed"},
		{"invalid JSON", good(map[string]string{"data": "{"}), "data: is not valid JSON"},
		{"JSON with trailing garbage", good(map[string]string{"data": "{}x"}), "data: is not valid JSON"},
		{"invalid UTF-8", good(map[string]string{"data": "\"\xff\""}), "data: is not valid UTF-8"},
		{"leading whitespace", good(map[string]string{"data": " {}"}), "data: has leading or trailing whitespace"},
		{"trailing whitespace", good(map[string]string{"data": "{}\n"}), "data: has leading or trailing whitespace"},
		{"empty data", good(map[string]string{"data": ""}), "data: is empty, want a JSON value"},
		{"max_event_bytes exactly", good(map[string]string{"data": exactly}), ""},
		{"max_event_bytes plus one", good(map[string]string{"data": over}), "data: is 17 bytes, max_event_bytes is 16"},
		{"watermill no metadata", watermillFields(t, nil, "{}"), "to: metadata key is missing (Watermill entry)"},
		{"watermill bad metadata", map[string]string{FieldWatermillUUID: "u", FieldWatermillPayload: "{}", FieldWatermillMetadata: "\xc1"}, "metadata: not a msgpack map of strings: "},
		{"watermill bad to", watermillFields(t, map[string]string{"to": "x"}, "{}"), "to: item \"x\": want user:<id>, group:<name> or *"},
		{"watermill bad payload", watermillFields(t, map[string]string{"to": "*"}, "nope"), "data: is not valid JSON"},
		{"watermill no payload", map[string]string{FieldWatermillUUID: "u"}, "to: metadata key is missing (Watermill entry)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := DecodeEntry(testID, tc.fields, lim)
			if tc.reason == "" {
				if err != nil || ev == nil {
					t.Fatalf("good entry refused: %v", err)
				}
				return
			}
			var bad *bridge.BadEntryError
			if !errors.As(err, &bad) || !errors.Is(err, bridge.ErrBadEntry) {
				t.Fatalf("got %v (%T), want a *bridge.BadEntryError", err, err)
			}
			if !strings.HasPrefix(bad.Reason, tc.reason) || strings.ContainsAny(bad.Reason, "\r\n") {
				t.Fatalf("reason %q, want %q", bad.Reason, tc.reason)
			}
		})
	}
}

// The subscriber hands message.Metadata (with its own keys) straight in.
func TestDecodeIgnoresSubscriberMetadata(t *testing.T) {
	md := message.Metadata{"to": "*", "data": "true", "_notifybridge_entry_id": "1-1"}
	if _, err := DecodeEntry(testID, md, bridge.DefaultLimits); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkDecodePlain(b *testing.B) {
	fields := map[string]string{
		"to":                     "user:42,group:ops",
		"type":                   "alarm.fiber_break",
		"data":                   `{"fiber":"F-12","km":3.2,"site":"north-east-7","severity":"major","note":"loss of light on span 4; technicians dispatched"}`,
		"_notifybridge_entry_id": "1732451234567-0",
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEntry(testID, fields, bridge.DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add("user:1,group:g", "t.x", `{"a":[1,2,{"b":null}]}`, false)
	f.Add("*", "", "1", false)
	f.Add("user:1,,x", "a b", " {}", false)
	f.Add("group:ops", "alarm", `"\ud800"`, true)
	f.Add("user:\x00", "", "\xff", true)
	lim := bridge.Limits{MaxEventBytes: 1024, MaxRecipients: 8}
	f.Fuzz(func(t *testing.T, to, typ, data string, watermill bool) {
		var fields map[string]string
		if watermill {
			b, _ := msgpack.Marshal(map[string]string{"to": to, "type": typ})
			fields = map[string]string{FieldWatermillUUID: "u", FieldWatermillPayload: data, FieldWatermillMetadata: string(b)}
		} else {
			fields = map[string]string{"to": to, "type": typ, "data": data}
		}
		ev, err := DecodeEntry(testID, fields, lim)
		if err != nil {
			var bad *bridge.BadEntryError
			if !errors.As(err, &bad) || bad.Reason == "" || strings.ContainsAny(bad.Reason, "\r\n") {
				t.Fatalf("error %q (%T) is not a one-line bad-entry reason", err, err)
			}
			return
		}
		// A good entry is delivered byte for byte, with the right id and type.
		if string(ev.Data()) != data || ev.To != to || (typ != "" && ev.Type != typ) {
			t.Fatalf("event %q does not carry the entry", ev.Payload())
		}
		if !strings.HasPrefix(string(ev.Payload()), `{"id":"1732451234567-0","type":"`) {
			t.Fatalf("payload %q", ev.Payload())
		}
	})
}
