package handlers

import (
	"context"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/transport/streams"
	"github.com/redis/go-redis/v9"
)

// Store is bridge.Store over a streams.Reader: every event it returns went
// through DecodeEntry, exactly as in ingest; entries that do not decode are
// skipped (ingest dead-letters them) but still count for last.
type Store struct {
	r   *streams.Reader
	lim bridge.Limits
	// undecodable, when set, hears of every entry that did not decode (warm
	// start sets it: the entries it reads are not read by ingest again).
	undecodable func(id bridge.ID, fields map[string]string, err error)
}

var _ bridge.Store = (*Store)(nil)

// NewStore returns a Store reading through r with the entry limits lim.
func NewStore(r *streams.Reader, lim bridge.Limits) *Store { return &Store{r: r, lim: lim} }

// ReportUndecodable makes the Store call fn for every entry it skips because
// it does not decode; nil stops it. fn must copy fields to keep them. Not
// safe to change while the Store is read.
func (s *Store) ReportUndecodable(fn func(id bridge.ID, fields map[string]string, err error)) {
	s.undecodable = fn
}

// Range implements bridge.Store.
func (s *Store) Range(ctx context.Context, from bridge.ID, count int) ([]*bridge.Event, bridge.ID, error) {
	msgs, err := s.r.Range(ctx, from.String(), int64(count))
	if err != nil {
		return nil, bridge.ID{}, err
	}
	return s.decode(msgs)
}

// RevRange implements bridge.Store.
func (s *Store) RevRange(ctx context.Context, before bridge.ID, count int) ([]*bridge.Event, bridge.ID, error) {
	msgs, err := s.r.RevRange(ctx, before.String(), int64(count))
	if err != nil {
		return nil, bridge.ID{}, err
	}
	return s.decode(msgs)
}

func (s *Store) decode(msgs []redis.XMessage) ([]*bridge.Event, bridge.ID, error) {
	var last bridge.ID
	events := make([]*bridge.Event, 0, len(msgs))
	fields := make(map[string]string)
	for _, m := range msgs {
		id, err := bridge.ParseID(m.ID)
		if err != nil {
			continue // Redis writes every id; never happens
		}
		last = id
		entryFields(fields, m.Values)
		// DecodeEntry keeps no reference to fields: the map is reused.
		ev, err := DecodeEntry(id, fields, s.lim)
		switch {
		case err == nil:
			events = append(events, ev)
		case s.undecodable != nil:
			s.undecodable(id, fields, err)
		}
	}
	return events, last, nil
}

// Info implements bridge.Store. MaxDeletedID follows bridge's meaning, the
// newest id ever trimmed or deleted, which Redis does not report as such:
// max-deleted-entry-id counts XDEL only. So, on Redis 7:
//   - entries-added equal to the length: nothing was ever removed (0-0);
//   - an empty stream: everything was removed, up to its last generated id;
//   - otherwise trimming may have removed entries up to just before the
//     first one: the larger of the id before FirstID and
//     max-deleted-entry-id. This may be later than the real newest trimmed
//     id, so a resume from exactly that id is told of a gap it did not have;
//     it never hides a real one.
func (s *Store) Info(ctx context.Context) (bridge.StreamInfo, error) {
	in, err := s.r.Info(ctx)
	if err != nil || !in.Exists {
		return bridge.StreamInfo{}, err
	}
	out := bridge.StreamInfo{Exists: true, Length: in.Length, MaxDeletedKnown: in.MaxDeletedKnown}
	var maxDeleted bridge.ID
	for _, p := range []struct {
		text string
		dst  *bridge.ID
	}{{in.FirstID, &out.FirstID}, {in.LastGeneratedID, &out.LastGeneratedID}, {in.MaxDeletedID, &maxDeleted}} {
		if p.text == "" {
			continue
		}
		id, err := bridge.ParseID(p.text)
		if err != nil {
			return bridge.StreamInfo{}, err
		}
		*p.dst = id
	}
	if !in.MaxDeletedKnown {
		return out, nil
	}
	switch {
	case in.EntriesAdded == in.Length:
		out.MaxDeletedID = bridge.ID{}
	case in.Length == 0:
		out.MaxDeletedID = out.LastGeneratedID
	default:
		out.MaxDeletedID = out.FirstID.Prev()
		if out.MaxDeletedID.Less(maxDeleted) {
			out.MaxDeletedID = maxDeleted
		}
	}
	return out, nil
}

// entryFields refills fields with an entry's string values (Redis sends
// nothing else); the map is reused across entries.
func entryFields(fields map[string]string, values map[string]any) {
	clear(fields)
	for k, v := range values {
		if str, ok := v.(string); ok {
			fields[k] = str
		}
	}
}
