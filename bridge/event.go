package bridge

import "unicode/utf8"

// Event is one decoded stream entry, ready to be sent. It is immutable once
// built and shared by every connection that receives it.
type Event struct {
	ID   ID
	Type string
	// To is the validated `to` field; walk it with ForEachRecipient.
	To string
	// Frame is the complete server-to-client WebSocket text frame (header and
	// payload {"id":…,"type":…,"data":…}), built once. Writers send it as is
	// and never modify it.
	Frame []byte
	// Control is set for a control entry (control.go): it has no Frame and
	// is never sent.
	Control *Control
	// payloadAt is where the JSON payload starts inside Frame.
	payloadAt int
	// dataAt is where the data bytes start inside Frame.
	dataAt int
}

// Payload is the JSON text of the event frame, without the WebSocket header.
func (e *Event) Payload() []byte { return e.Frame[e.payloadAt:] }

// Data is the entry's data, byte for byte.
func (e *Event) Data() []byte { return e.Frame[e.dataAt : len(e.Frame)-1] }

// Size is what the event costs the replay window: its frame plus the fixed
// overhead of the struct and its index entries.
func (e *Event) Size() int { return len(e.Frame) + len(e.To) + len(e.Type) + eventOverhead }

// eventOverhead approximates the struct, its slice headers and one index slot
// per recipient list; see docs/design.md for the accounting.
const eventOverhead = 96

// Limits are the entry rules that depend on settings.
type Limits struct {
	MaxEventBytes int // bytes of data, contract default 65536
	MaxRecipients int // items in to, contract default 1000
}

// DefaultLimits are the contract defaults.
var DefaultLimits = Limits{MaxEventBytes: 65536, MaxRecipients: 1000}

// NewEvent validates an entry's fields by contract §1 and builds its frame.
// typ "" means the default type. data is copied into the frame exactly once;
// a good entry costs two allocations (the Event and its frame).
func NewEvent(id ID, typ, to, data string, lim Limits) (*Event, error) {
	if err := ValidateTo(to, lim.MaxRecipients); err != nil {
		return nil, err
	}
	if typ == "" {
		typ = DefaultType
	} else if err := ValidateType(typ); err != nil {
		return nil, badEntry("type: %s %v", quoteShort(typ), err)
	}
	if err := validateData(data, lim.MaxEventBytes); err != nil {
		return nil, err
	}
	var idBuf [41]byte
	idText := id.AppendTo(idBuf[:0])
	payloadLen := len(`{"id":"`) + len(idText) + len(`","type":"`) + len(typ) + len(`","data":`) + len(data) + len(`}`)
	hdrLen := TextFrameHeaderLen(payloadLen)
	frame := make([]byte, 0, hdrLen+payloadLen)
	frame = AppendTextFrameHeader(frame, payloadLen)
	frame = append(frame, `{"id":"`...)
	frame = append(frame, idText...)
	frame = append(frame, `","type":"`...)
	frame = append(frame, typ...)
	frame = append(frame, `","data":`...)
	dataAt := len(frame)
	frame = append(frame, data...)
	frame = append(frame, '}')
	return &Event{ID: id, Type: typ, To: to, Frame: frame, payloadAt: hdrLen, dataAt: dataAt}, nil
}

func validateData(data string, maxBytes int) error {
	if len(data) == 0 {
		return badEntry("data: is empty, want a JSON value")
	}
	if len(data) > maxBytes {
		return badEntry("data: is %d bytes, max_event_bytes is %d", len(data), maxBytes)
	}
	if isJSONSpace(data[0]) || isJSONSpace(data[len(data)-1]) {
		return badEntry("data: has leading or trailing whitespace")
	}
	if !validJSONText(data) {
		// One pass accepts the good entries; only a bad one pays for a
		// second look to say why.
		if !utf8.ValidString(data) {
			return badEntry("data: is not valid UTF-8")
		}
		return badEntry("data: is not valid JSON")
	}
	return nil
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
