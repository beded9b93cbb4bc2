// Package bridge is the core of notifybridge: the event model and its rules,
// the memory-bounded replay window, the recipient index and the per-connection
// cursors that serve live delivery and resume alike. It knows neither Watermill
// nor gobwas types; handlers/ joins it to the edges in transport/.
package bridge

import (
	"errors"
	"strconv"
	"strings"
)

// ID is a Redis stream entry id, <ms>-<seq>. The zero value is 0-0.
type ID struct {
	Ms  uint64
	Seq uint64
}

// ErrBadID is wrapped by every id parsing error.
var ErrBadID = errors.New("malformed id")

// ParseID parses "<ms>-<seq>" exactly as Redis writes it (decimal, no sign,
// no spaces). "<ms>" alone is not accepted: resume ids always come from frames.
func ParseID(s string) (ID, error) {
	dash := strings.IndexByte(s, '-')
	if dash <= 0 || dash == len(s)-1 {
		return ID{}, badID(s)
	}
	ms, ok := parseDecimal(s[:dash])
	if !ok {
		return ID{}, badID(s)
	}
	seq, ok := parseDecimal(s[dash+1:])
	if !ok {
		return ID{}, badID(s)
	}
	return ID{Ms: ms, Seq: seq}, nil
}

func badID(s string) error {
	const maxShown = 64
	if len(s) > maxShown {
		s = s[:maxShown] + "…"
	}
	return &idError{input: s}
}

type idError struct{ input string }

func (e *idError) Error() string {
	return "malformed id " + strconv.Quote(e.input) + ": want <ms>-<seq>"
}

func (e *idError) Unwrap() error { return ErrBadID }

// parseDecimal accepts 1–20 ASCII digits that fit in a uint64 (Redis ids are
// unsigned 64-bit). Leading zeros are tolerated as Redis does.
func parseDecimal(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > 20 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// String returns the id as Redis writes it.
func (id ID) String() string { return string(id.AppendTo(make([]byte, 0, 41))) }

// AppendTo appends the id's text form to b without allocating beyond b.
func (id ID) AppendTo(b []byte) []byte {
	b = strconv.AppendUint(b, id.Ms, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, id.Seq, 10)
}

// Compare returns -1, 0 or +1.
func (id ID) Compare(o ID) int {
	switch {
	case id.Ms < o.Ms:
		return -1
	case id.Ms > o.Ms:
		return 1
	case id.Seq < o.Seq:
		return -1
	case id.Seq > o.Seq:
		return 1
	}
	return 0
}

// Less reports whether id sorts before o in the stream.
func (id ID) Less(o ID) bool { return id.Compare(o) < 0 }

// IsZero reports whether id is 0-0.
func (id ID) IsZero() bool { return id == ID{} }

// Next returns the smallest id greater than id (the exclusive start of a range
// "after id"). The maximum id has no successor and is returned unchanged.
func (id ID) Next() ID {
	if id.Seq == ^uint64(0) {
		if id.Ms == ^uint64(0) {
			return id
		}
		return ID{Ms: id.Ms + 1}
	}
	return ID{Ms: id.Ms, Seq: id.Seq + 1}
}

// Prev returns the largest id smaller than id; 0-0 has none and is returned
// unchanged.
func (id ID) Prev() ID {
	switch {
	case id.Seq > 0:
		return ID{Ms: id.Ms, Seq: id.Seq - 1}
	case id.Ms > 0:
		return ID{Ms: id.Ms - 1, Seq: ^uint64(0)}
	}
	return id
}
