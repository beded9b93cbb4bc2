package bridge

import (
	"context"
)

// Peer is the core's handle on one connection. The WebSocket pool's
// connection type implements it; the core never does network I/O itself.
type Peer interface {
	// Wake says new frames may be ready; the pool schedules the connection's
	// drainer, which calls the cursor's Pull. It never blocks.
	Wake()
	// Close closes the connection with a WebSocket close code and a reason
	// (1013 when it fell out of the replay window). It never blocks.
	Close(code int, reason string)
}

// Store reads the stream itself, for warm start and for resumes older than
// the window. handlers/ implements it over transport/streams; every event it
// returns went through the same decoder as ingest, and entries that do not
// decode are skipped (ingest dead-letters them).
type Store interface {
	// Range reads up to count entries with id >= from, oldest first (XRANGE
	// from + COUNT count). last is the id of the last entry read, decodable or
	// not (zero when none), so a caller can page on from last.Next().
	Range(ctx context.Context, from ID, count int) (events []*Event, last ID, err error)
	// RevRange reads up to count entries with id <= before, newest first
	// (XREVRANGE before - COUNT count); last is the oldest id read.
	RevRange(ctx context.Context, before ID, count int) (events []*Event, last ID, err error)
	// Info describes the stream (XINFO STREAM). A missing stream is not an
	// error: it reports Exists false and zero ids.
	Info(ctx context.Context) (StreamInfo, error)
}

// StreamInfo is what the core needs of XINFO STREAM.
type StreamInfo struct {
	Exists bool
	Length int64
	// FirstID is the oldest entry still in the stream (zero when empty).
	FirstID ID
	// LastGeneratedID is the newest id the stream ever generated.
	LastGeneratedID ID
	// MaxDeletedID is the newest id ever trimmed or deleted (Redis 7+). When
	// MaxDeletedKnown is false the server did not say (older Redis, or the
	// embedded miniredis), and the core must assume anything before FirstID
	// may have existed.
	MaxDeletedID    ID
	MaxDeletedKnown bool
}
