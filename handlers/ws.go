package handlers

import (
	"errors"
	"fmt"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/transport/wspool"
)

// Accept joins the WebSocket pool to the core: the pool's connection is the
// core's Peer, and the core's cursor is the pool's Source. The pool has
// checked the identity; the resume parameters are parsed here, by the core's
// one parser. A malformed query or an id in the future is the client's
// fault (400); anything else, such as Redis not answering while the core
// checks an id, is the server's (503, retry).
func Accept(hub *bridge.Hub) wspool.AcceptFunc {
	return func(req *wspool.Request) (wspool.Source, error) {
		q, err := bridge.ParseResumeQuery(req.Query, req.LastEventID)
		if err != nil {
			return nil, err
		}
		cur, err := hub.Accept(req.Conn, bridge.Identity{User: req.Identity.User, Groups: req.Identity.Groups}, q)
		switch {
		case err == nil:
			return cur, nil
		case errors.Is(err, bridge.ErrBadQuery):
			return nil, err
		default:
			return nil, fmt.Errorf("%w: %v", wspool.ErrUnavailable, err)
		}
	}
}
