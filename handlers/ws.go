package handlers

import (
	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/transport/wspool"
)

// Accept joins the WebSocket pool to the core: the pool's connection is the
// core's Peer, and the core's cursor is the pool's Source. Errors become
// HTTP 400 with their one-line text.
func Accept(hub *bridge.Hub) wspool.AcceptFunc {
	return func(req *wspool.Request) (wspool.Source, error) {
		cur, err := hub.Accept(req.Conn, req.Identity.User, req.Identity.Groups, req.Query, req.LastEventID)
		if err != nil {
			return nil, err
		}
		return cur, nil
	}
}
