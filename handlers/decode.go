// Package handlers joins the edges to the core: it decodes stream entries
// into bridge events, runs the Watermill ingest router with its dead-letter
// policy, and implements bridge.Store over transport/streams.
package handlers

import (
	"strings"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/vmihailenco/msgpack/v5"
)

// Field names of entries (contract §1).
const (
	FieldTo   = "to"
	FieldType = "type"
	FieldData = "data"
	// FieldControl marks a control entry (bridge/control.go); FieldReason is
	// its optional one-line reason.
	FieldControl = "control"
	FieldReason  = "reason"

	// Fields written by watermill-redisstream's DefaultMarshallerUnmarshaller.
	FieldWatermillUUID     = "_watermill_message_uuid"
	FieldWatermillPayload  = "payload"
	FieldWatermillMetadata = "metadata"
)

// DecodeEntry turns one stream entry into an event. fields are the entry's
// fields (other fields, such as the subscriber's _notifybridge_ metadata, are
// ignored). An entry with a _watermill_message_uuid field is a Watermill
// entry: to and type come from its msgpack metadata and data is its payload.
//
// Every rule is bridge's: an entry that breaks one yields a
// *bridge.BadEntryError with a one-line reason. A good plain entry costs the
// two allocations of bridge.NewEvent and no more.
func DecodeEntry(id bridge.ID, fields map[string]string, lim bridge.Limits) (*bridge.Event, error) {
	if _, ok := fields[FieldWatermillUUID]; ok {
		return decodeWatermill(id, fields, lim)
	}
	to, ok := fields[FieldTo]
	if !ok {
		return nil, &bridge.BadEntryError{Reason: "to: field is missing"}
	}
	if kind, ok := fields[FieldControl]; ok {
		return decodeControl(id, kind, to, fields, lim)
	}
	data, ok := fields[FieldData]
	if !ok {
		return nil, &bridge.BadEntryError{Reason: "data: field is missing"}
	}
	typ, hasType := fields[FieldType]
	return newEvent(id, typ, hasType, to, data, lim)
}

// decodeControl reads a control entry. It carries no data: a control entry
// with a data field is taken for a producer's mistake (an event meant with a
// stray field), not silently turned into a disconnect.
func decodeControl(id bridge.ID, kind, to string, fields map[string]string, lim bridge.Limits) (*bridge.Event, error) {
	if _, ok := fields[FieldData]; ok {
		return nil, &bridge.BadEntryError{Reason: "control: entry has a data field; a control entry carries to, control and reason only"}
	}
	return bridge.NewControl(id, kind, to, fields[FieldReason], lim)
}

func decodeWatermill(id bridge.ID, fields map[string]string, lim bridge.Limits) (*bridge.Event, error) {
	var md map[string]string
	if raw := fields[FieldWatermillMetadata]; raw != "" {
		if err := msgpack.Unmarshal([]byte(raw), &md); err != nil {
			return nil, &bridge.BadEntryError{Reason: "metadata: not a msgpack map of strings: " + oneLine(err.Error())}
		}
	}
	to, ok := md[FieldTo]
	if !ok {
		return nil, &bridge.BadEntryError{Reason: "to: metadata key is missing (Watermill entry)"}
	}
	data, ok := fields[FieldWatermillPayload]
	if !ok {
		return nil, &bridge.BadEntryError{Reason: "payload: field is missing (Watermill entry)"}
	}
	typ, hasType := md[FieldType]
	return newEvent(id, typ, hasType, to, data, lim)
}

// newEvent leaves every rule to bridge. A type given but empty breaks the
// 1–128 bytes rule; bridge.NewEvent reads "" as "no type", so that one case
// is checked here, with bridge's own rule.
func newEvent(id bridge.ID, typ string, hasType bool, to, data string, lim bridge.Limits) (*bridge.Event, error) {
	if hasType && typ == "" {
		if err := bridge.ValidateType(typ); err != nil {
			return nil, &bridge.BadEntryError{Reason: "type: " + err.Error()}
		}
	}
	return bridge.NewEvent(id, typ, to, data, lim)
}

// oneLine keeps the first line of s, at most 256 bytes, for reasons and logs.
func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	const maxLen = 256
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return s
}
