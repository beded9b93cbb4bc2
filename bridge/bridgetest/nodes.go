package bridgetest

// The schedule's nodes and what happens to them: started and warmed,
// restarted, and told when Redis loses the stream.

import (
	"context"

	"github.com/notifybridge/notifybridge/bridge"
)

// startNode starts a node over the stream as it is now: a Hub warmed from it
// (with its own window size unless first).
func (s *schedule) startNode(name string, ownWindow bool) (*node, error) {
	cfg := s.cfg
	if ownWindow {
		cfg.WindowBytes = int64(200 * (2 + s.rnd.IntN(12)))
	}
	obs := &observer{}
	cfg.Hooks = obs
	h, err := bridge.NewHub(cfg, s.b)
	if err != nil {
		return nil, err
	}
	if _, err := h.Warm(context.Background()); err != nil {
		_ = h.Close()
		return nil, err
	}
	n := &node{h: h, name: name, ingested: len(s.hist), obs: obs, lostBefore: s.flushedUpTo,
		emptyWarm: s.info().Length == 0}
	s.logf("%s warm window=%d page=%d cursor=%v head=%s holds %d", name, cfg.WindowBytes, cfg.BackfillPage, cfg.CursorInterval, h.Head(), n.ingested-s.windowFirst(n))
	return n, nil
}

// restart replaces node i by a new process of the same name: its
// connections end, and the new Hub warms from the stream as it is now.
func (s *schedule) restart(i int) error {
	old := s.nodes[i]
	for _, c := range s.conns {
		if c.n == old && !c.closed && !c.slow {
			c.tc.c.Closed()
			c.closed = true
		}
	}
	if err := old.h.Close(); err != nil {
		return err
	}
	s.logf("%s restart", old.name)
	n, err := s.startNode(old.name, true)
	if err != nil {
		return err
	}
	s.nodes[i] = n
	return nil
}

// flush: Redis loses the stream. Every node has ingested it all first (what
// Redis loses before any node read it is unknowable). A running node notices
// before it ingests again, sometimes at once, before the next entry.
func (s *schedule) flush() error {
	for _, n := range s.nodes {
		if err := s.ingest(n, len(s.hist)); err != nil {
			return err
		}
	}
	if err := s.waitPages(); err != nil {
		return err
	}
	s.flushedUpTo = later(s.flushedUpTo, s.info().LastGeneratedID)
	s.b.Flush()
	s.trimmed = len(s.hist)
	s.logf("flush (lost up to %s)", s.flushedUpTo)
	for _, n := range s.nodes {
		n.lossPending = true
		if s.rnd.IntN(2) == 0 {
			s.groupRecreated(n)
		}
	}
	return nil
}

func (s *schedule) groupRecreated(n *node) {
	at := n.h.GroupRecreated()
	n.lossPending = false
	s.logf("%s group recreated at %s", n.name, at)
}
