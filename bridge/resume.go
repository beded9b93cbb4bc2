package bridge

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ResumeMode says where a new connection starts.
type ResumeMode uint8

const (
	// ResumeLive starts at this node's head: no replay, caught_up at once.
	ResumeLive ResumeMode = iota
	// ResumeAfterID replays every event with an id greater than ResumeQuery.ID.
	ResumeAfterID
	// ResumeSince replays every event whose id time is at or after
	// ResumeQuery.SinceMs.
	ResumeSince
)

// MaxTypePatterns bounds the items of a types filter, so matching an event
// costs at most that many comparisons.
const MaxTypePatterns = 64

// ResumeQuery is the resume part of a /ws request (contract §2 and §4).
type ResumeQuery struct {
	Mode    ResumeMode
	ID      ID     // ResumeAfterID
	SinceMs uint64 // ResumeSince: the first millisecond replayed
	Types   TypeFilter

	idParam string // where ID came from, for error messages
}

// QueryError is a malformed query parameter; Error is one line, fit for an
// HTTP 400 body.
type QueryError struct {
	Param  string
	Reason string
}

func (e *QueryError) Error() string { return e.Param + ": " + e.Reason }

// ErrBadQuery matches every *QueryError with errors.Is.
var ErrBadQuery = errors.New("bad query")

// Is makes errors.Is(err, ErrBadQuery) true for every QueryError.
func (e *QueryError) Is(target error) bool { return target == ErrBadQuery }

// ParseResumeQuery is the one parser of the resume parameters: last_event_id
// (wins over the Last-Event-ID header), since (RFC 3339 or unix milliseconds,
// inclusive; never together with an id) and types. An empty parameter counts
// as absent; a parameter given twice counts with its last value, as entry
// fields do. It does not consult the stream: "id is in the future" is the
// Hub's check.
func ParseResumeQuery(query url.Values, lastEventIDHeader string) (ResumeQuery, error) {
	var q ResumeQuery
	idText, idParam := lastValue(query, "last_event_id"), "last_event_id"
	if idText == "" {
		idText, idParam = lastEventIDHeader, "Last-Event-ID"
	}
	sinceText := lastValue(query, "since")
	switch {
	case idText != "" && sinceText != "":
		return q, &QueryError{Param: "since", Reason: "cannot be combined with " + idParam}
	case idText != "":
		id, err := ParseID(idText)
		if err != nil {
			return q, &QueryError{Param: idParam, Reason: err.Error()}
		}
		q.Mode, q.ID, q.idParam = ResumeAfterID, id, idParam
	case sinceText != "":
		ms, err := parseSince(sinceText)
		if err != nil {
			return q, &QueryError{Param: "since", Reason: err.Error()}
		}
		q.Mode, q.SinceMs = ResumeSince, ms
	}
	types, err := ParseTypeFilter(lastValue(query, "types"))
	if err != nil {
		return q, &QueryError{Param: "types", Reason: err.Error()}
	}
	q.Types = types
	return q, nil
}

func lastValue(query url.Values, key string) string {
	vs := query[key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// parseSince accepts unix milliseconds (ASCII digits) or an RFC 3339 time. A
// time with a fraction of a millisecond rounds up: entries whose id time is
// at or after it start at the next whole millisecond.
func parseSince(s string) (uint64, error) {
	if ms, ok := parseDecimal(s); ok {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, errors.New("malformed time " + quoteShort(s) + ": want RFC 3339 or unix milliseconds")
	}
	if t.Before(time.Unix(0, 0)) {
		return 0, errors.New("time " + quoteShort(s) + " is before 1970")
	}
	ms := uint64(t.UnixMilli())
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		ms++
	}
	return ms, nil
}

// TypeFilter matches event types against exact names and trailing-* prefixes.
// The zero value matches every type. It is immutable once parsed.
type TypeFilter struct {
	exact    []string
	prefixes []string
	any      bool // "*" was among the patterns
}

// ParseTypeFilter parses a comma-separated types parameter. Absent, empty or
// "*" means all types; a "*" may only be the last character of a pattern and
// what precedes it must be type characters.
func ParseTypeFilter(s string) (TypeFilter, error) {
	var f TypeFilter
	if s == "" {
		return f, nil
	}
	n := 0
	for rest := s; ; {
		item, tail, more := strings.Cut(rest, ",")
		n++
		if n > MaxTypePatterns {
			return TypeFilter{}, errors.New("more than " + strconv.Itoa(MaxTypePatterns) + " patterns")
		}
		if err := f.add(item); err != nil {
			return TypeFilter{}, err
		}
		if !more {
			break
		}
		rest = tail
	}
	if f.any {
		return TypeFilter{}, nil
	}
	return f, nil
}

func (f *TypeFilter) add(item string) error {
	if item == "*" {
		f.any = true
		return nil
	}
	prefix, star := strings.CutSuffix(item, "*")
	if prefix == "" {
		return errors.New("empty pattern")
	}
	if err := ValidateType(prefix); err != nil {
		return errors.New("pattern " + quoteShort(item) + " " + err.Error() + " (a * only as the last character)")
	}
	// A copy: the item may be a slice of the request, which a connection's
	// filter must not keep alive.
	prefix = strings.Clone(prefix)
	if star {
		f.prefixes = append(f.prefixes, prefix)
	} else {
		f.exact = append(f.exact, prefix)
	}
	return nil
}

// All reports whether the filter matches every type.
func (f TypeFilter) All() bool { return f.exact == nil && f.prefixes == nil }

// Match reports whether typ passes the filter.
func (f TypeFilter) Match(typ string) bool {
	if f.All() {
		return true
	}
	for _, e := range f.exact {
		if typ == e {
			return true
		}
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(typ, p) {
			return true
		}
	}
	return false
}

// String renders the filter as a types parameter ("*" for all).
func (f TypeFilter) String() string {
	if f.All() {
		return "*"
	}
	parts := make([]string, 0, len(f.exact)+len(f.prefixes))
	parts = append(parts, f.exact...)
	for _, p := range f.prefixes {
		parts = append(parts, p+"*")
	}
	return strings.Join(parts, ",")
}
