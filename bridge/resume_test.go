package bridge

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseResumeQuery(t *testing.T) {
	tests := []struct {
		query, header string
		want          ResumeQuery
		err           string
	}{
		{query: "", want: ResumeQuery{}},
		{query: "last_event_id=5-1", want: ResumeQuery{Mode: ResumeAfterID, ID: ID{5, 1}}},
		{query: "last_event_id=0-0", want: ResumeQuery{Mode: ResumeAfterID}},
		{header: "7-0", want: ResumeQuery{Mode: ResumeAfterID, ID: ID{7, 0}}},
		{query: "last_event_id=5-1", header: "7-0", want: ResumeQuery{Mode: ResumeAfterID, ID: ID{5, 1}}},
		{query: "last_event_id=", header: "7-0", want: ResumeQuery{Mode: ResumeAfterID, ID: ID{7, 0}}},
		{query: "last_event_id=1-0&last_event_id=2-0", want: ResumeQuery{Mode: ResumeAfterID, ID: ID{2, 0}}},
		{query: "since=1732451234567", want: ResumeQuery{Mode: ResumeSince, SinceMs: 1732451234567}},
		{query: "since=2024-11-24T12:27:14.567Z", want: ResumeQuery{Mode: ResumeSince, SinceMs: 1732451234567}},
		{query: "since=2024-11-24T13:27:14.567%2B01:00", want: ResumeQuery{Mode: ResumeSince, SinceMs: 1732451234567}},
		// A fraction of a millisecond rounds up: inclusive of the instant.
		{query: "since=2024-11-24T12:27:14.5665Z", want: ResumeQuery{Mode: ResumeSince, SinceMs: 1732451234567}},
		{query: "since=0", want: ResumeQuery{Mode: ResumeSince}},
		{query: "last_event_id=5", err: "last_event_id: malformed id"},
		{query: "last_event_id=-5-1", err: "last_event_id: malformed id"},
		{query: "last_event_id=5-1%20", err: "last_event_id: malformed id"},
		{header: "abc", err: "Last-Event-ID: malformed id"},
		{query: "last_event_id=99999999999999999999-0", err: "malformed id"},
		{query: "since=1&last_event_id=1-0", err: "since: cannot be combined with last_event_id"},
		{query: "since=1", header: "1-0", err: "since: cannot be combined with Last-Event-ID"},
		{query: "since=yesterday", err: "since: malformed time"},
		{query: "since=1969-12-31T23:59:59Z", err: "before 1970"},
		{query: "since=-1", err: "since: malformed time"},
		{query: "types=", want: ResumeQuery{}},
		{query: "types=*", want: ResumeQuery{}},
		{query: "types=a,*", want: ResumeQuery{}},
		{query: "types=*a", err: "types: pattern"},
		{query: "types=a*b", err: "types: pattern"},
		{query: "types=a**", err: "types: pattern"},
		{query: "types=a,,b", err: "types: empty pattern"},
		{query: "types=a,", err: "types: empty pattern"},
		{query: "types=a%20b", err: "types: pattern"},
		{query: "types=" + strings.Repeat("a,", MaxTypePatterns) + "a", err: "more than"},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		got, err := ParseResumeQuery(q, tt.header)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q %q: err %v, want %q", tt.query, tt.header, err, tt.err)
			}
			if err != nil && !errors.Is(err, ErrBadQuery) {
				t.Errorf("%q: %v is not ErrBadQuery", tt.query, err)
			}
			if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("%q: reason is not one line: %q", tt.query, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %q: %v", tt.query, tt.header, err)
			continue
		}
		if got.Mode != tt.want.Mode || got.ID != tt.want.ID || got.SinceMs != tt.want.SinceMs {
			t.Errorf("%q %q: got %+v, want %+v", tt.query, tt.header, got, tt.want)
		}
	}
}

func TestTypeFilter(t *testing.T) {
	tests := []struct {
		filter string
		match  []string
		miss   []string
	}{
		{"", []string{"a", "alarm.x"}, nil},
		{"*", []string{"a", "alarm.x"}, nil},
		{"alarm.*", []string{"alarm.", "alarm.fiber_break"}, []string{"alarm", "alarms.x", "test.done"}},
		{"alarm.*,test.done", []string{"alarm.x", "test.done"}, []string{"test.done2", "test"}},
		{"notification", []string{"notification"}, []string{"notification.x", "notificatio"}},
	}
	for _, tt := range tests {
		f, err := ParseTypeFilter(tt.filter)
		if err != nil {
			t.Fatalf("%q: %v", tt.filter, err)
		}
		for _, typ := range tt.match {
			if !f.Match(typ) {
				t.Errorf("%q should match %q", tt.filter, typ)
			}
		}
		for _, typ := range tt.miss {
			if f.Match(typ) {
				t.Errorf("%q should not match %q", tt.filter, typ)
			}
		}
	}
}

// FuzzParseResumeQuery: any query and header either parse into a
// self-consistent result or fail with a one-line ErrBadQuery; a parsed id and
// filter survive a round trip through their text.
func FuzzParseResumeQuery(f *testing.F) {
	for _, s := range []struct{ q, h string }{
		{"last_event_id=1-0", ""}, {"", "1732451234567-3"}, {"since=1732451234567", ""},
		{"since=2024-11-24T12:27:14.5665Z", ""}, {"types=alarm.*,test.done", ""},
		{"since=1&last_event_id=1-0", ""}, {"types=a*b", ""}, {"last_event_id=18446744073709551615-18446744073709551615", ""},
	} {
		f.Add(s.q, s.h)
	}
	f.Fuzz(func(t *testing.T, rawQuery, header string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		got, err := ParseResumeQuery(q, header)
		if err != nil {
			if !errors.Is(err, ErrBadQuery) {
				t.Fatalf("error %v is not ErrBadQuery", err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("reason is not one line: %q", err)
			}
			return
		}
		switch got.Mode {
		case ResumeAfterID:
			back, err := ParseID(got.ID.String())
			if err != nil || back != got.ID {
				t.Fatalf("id %v does not round-trip: %v %v", got.ID, back, err)
			}
			if lastValue(q, "since") != "" {
				t.Fatalf("since accepted together with an id")
			}
		case ResumeSince:
			if lastValue(q, "last_event_id") != "" || header != "" {
				t.Fatalf("since accepted together with an id")
			}
		}
		again, err := ParseTypeFilter(got.Types.String())
		if err != nil {
			t.Fatalf("filter %q does not re-parse: %v", got.Types.String(), err)
		}
		if again.String() != got.Types.String() {
			t.Fatalf("filter round trip %q -> %q", got.Types.String(), again.String())
		}
		for _, typ := range []string{"a", "alarm.x", "notification"} {
			if again.Match(typ) != got.Types.Match(typ) {
				t.Fatalf("round-tripped filter disagrees on %q", typ)
			}
		}
	})
}
