package bridge

import (
	"unicode/utf8"

	"go.uber.org/zap"
)

// Control entries (contract §1 extension "control"): a stream entry with a
// control field is an instruction to every node, not an event. It travels in
// the window and the recipient lists like an event, so each connection meets
// it in stream order, after every event before it; it is never sent.

// ControlDisconnect is the control value that closes matching connections.
const ControlDisconnect = "disconnect"

// CloseRevoked is the close code of a connection closed by a disconnect
// entry (private range): the client stops, or gets a new token; reconnecting
// with the same one is refused while the revocation holds.
const CloseRevoked = 4001

// MaxReasonBytes bounds a control entry's reason.
const MaxReasonBytes = 200

// Control is what a control entry asks. Only disconnect exists.
type Control struct {
	Kind string
	// closeText is the close frame's reason, "revoked: <reason>", built once.
	closeText string
}

// NewControl validates a control entry's fields and builds its window entry.
// kind must be ControlDisconnect; reason is optional, one line of at most
// MaxReasonBytes of UTF-8. Anything else is a *BadEntryError (dead-lettered).
func NewControl(id ID, kind, to, reason string, lim Limits) (*Event, error) {
	if kind != ControlDisconnect {
		return nil, badEntry("control: %s is not a known control (known: disconnect)", quoteShort(kind))
	}
	if err := ValidateTo(to, lim.MaxRecipients); err != nil {
		return nil, err
	}
	if err := ValidateReason(reason); err != nil {
		return nil, &BadEntryError{Reason: "reason: " + err.Error()}
	}
	text := "revoked"
	if reason != "" {
		text += ": " + reason
	}
	return &Event{ID: id, To: to, Control: &Control{Kind: kind, closeText: text}}, nil
}

// ValidateReason checks a control entry's reason: one line, UTF-8, at most
// MaxReasonBytes (a close frame's reason has 123 bytes; the close text is
// cut there).
func ValidateReason(reason string) error {
	if len(reason) > MaxReasonBytes {
		return badEntry("is %d bytes, at most %d allowed", len(reason), MaxReasonBytes)
	}
	if !utf8.ValidString(reason) {
		return badEntry("is not valid UTF-8")
	}
	for i := 0; i < len(reason); i++ {
		if c := reason[i]; c < 0x20 || c == 0x7f {
			return badEntry("contains a control character (one line only)")
		}
	}
	return nil
}

// closeTextMax is what fits a close frame's reason (125 bytes less the code).
const closeTextMax = 123

// control applies a control entry the cursor reached. Only connections that
// were live when the entry arrived close: the cursor is caught up (it then
// examined everything up to the head at connect, so the entry is newer than
// the connection), or the entry lies after the head at connect. A resume
// that replays across an older revoke is not closed by it: its token passed
// the revocation check at the handshake, so it was issued after the revoke.
func (c *Cursor) control(ev *Event) {
	if !c.caughtUp {
		return
	}
	text := ev.Control.closeText
	if len(text) > closeTextMax {
		text = truncUTF8(text, closeTextMax)
	}
	c.mode = modeDone
	c.hub.logger.Debug("closing connection", zap.String("user", c.userID()),
		zap.String("cause", "revoked"), zap.Stringer("entry", ev.ID))
	c.peer.Close(CloseRevoked, text)
}

func truncUTF8(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
