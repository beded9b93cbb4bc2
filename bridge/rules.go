package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The rules of contract §1 and §4 live here and only here: the ingest decoder,
// the WebSocket query and identity checks and the publisher all call them.

const (
	// MaxNameBytes bounds user ids and group names.
	MaxNameBytes = 256
	// MaxTypeBytes bounds event types.
	MaxTypeBytes = 128
	// DefaultType is the type of an entry without one.
	DefaultType = "notification"
	// Broadcast is the recipient item meaning everyone.
	Broadcast = "*"
	// UserPrefix and GroupPrefix start targeted recipient items.
	UserPrefix  = "user:"
	GroupPrefix = "group:"
)

// BadEntryError says why a stream entry can never be delivered. It is a
// permanent error: retrying does not help, the entry goes to the dead-letter
// stream with Reason.
type BadEntryError struct{ Reason string }

func (e *BadEntryError) Error() string { return e.Reason }

// ErrBadEntry matches every *BadEntryError with errors.Is.
var ErrBadEntry = errors.New("bad entry")

// Is makes errors.Is(err, ErrBadEntry) true for every BadEntryError.
func (e *BadEntryError) Is(target error) bool { return target == ErrBadEntry }

func badEntry(format string, args ...any) error {
	return &BadEntryError{Reason: fmt.Sprintf(format, args...)}
}

// ValidateName checks a user id or group name: 1–256 bytes, no comma, no
// ASCII whitespace, no control character.
func ValidateName(s string) error {
	if len(s) == 0 {
		return errors.New("is empty")
	}
	if len(s) > MaxNameBytes {
		return fmt.Errorf("is %d bytes, at most %d allowed", len(s), MaxNameBytes)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ',':
			return errors.New("contains a comma")
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			return errors.New("contains whitespace")
		case c < 0x20 || c == 0x7f:
			return errors.New("contains a control character")
		}
	}
	return nil
}

// ValidateType checks an event type: 1–128 bytes of [A-Za-z0-9._:-].
func ValidateType(s string) error {
	if len(s) == 0 {
		return errors.New("is empty")
	}
	if len(s) > MaxTypeBytes {
		return fmt.Errorf("is %d bytes, at most %d allowed", len(s), MaxTypeBytes)
	}
	for i := 0; i < len(s); i++ {
		if !isTypeByte(s[i]) {
			return fmt.Errorf("has byte %s at %d, allowed are [A-Za-z0-9._:-]", strconv.QuoteRune(rune(s[i])), i)
		}
	}
	return nil
}

func isTypeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// ValidateTo checks a `to` field: comma-separated items `user:<id>`,
// `group:<name>` or `*`, at most maxRecipients items. It does not allocate.
func ValidateTo(to string, maxRecipients int) error {
	if to == "" {
		return badEntry("to: is empty")
	}
	n := 0
	for rest := to; ; {
		item, tail, more := strings.Cut(rest, ",")
		n++
		if n > maxRecipients {
			return badEntry("to: more than %d recipients", maxRecipients)
		}
		if err := validateItem(item); err != nil {
			return err
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

func validateItem(item string) error {
	if item == "" {
		return badEntry("to: empty recipient item")
	}
	if item == Broadcast {
		return nil
	}
	var name, kind string
	switch {
	case strings.HasPrefix(item, UserPrefix):
		name, kind = item[len(UserPrefix):], "user id"
	case strings.HasPrefix(item, GroupPrefix):
		name, kind = item[len(GroupPrefix):], "group name"
	default:
		return badEntry("to: item %s: want user:<id>, group:<name> or *", quoteShort(item))
	}
	if err := ValidateName(name); err != nil {
		return badEntry("to: %s %s %v", kind, quoteShort(name), err)
	}
	return nil
}

// RecipientKind tells the three kinds of recipient item apart.
type RecipientKind uint8

const (
	KindUser RecipientKind = iota + 1
	KindGroup
	KindBroadcast
)

// ForEachRecipient calls fn for every item of a validated `to` field; name is
// a substring of to (no allocation). Duplicates are passed as they come.
func ForEachRecipient(to string, fn func(kind RecipientKind, name string)) {
	for rest := to; rest != ""; {
		item, tail, _ := strings.Cut(rest, ",")
		switch {
		case item == Broadcast:
			fn(KindBroadcast, "")
		case strings.HasPrefix(item, UserPrefix):
			fn(KindUser, item[len(UserPrefix):])
		case strings.HasPrefix(item, GroupPrefix):
			fn(KindGroup, item[len(GroupPrefix):])
		}
		rest = tail
	}
}

func quoteShort(s string) string {
	const maxShown = 64
	if len(s) > maxShown {
		return strconv.Quote(s[:maxShown]) + "…"
	}
	return strconv.Quote(s)
}
