package fault

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
)

// rawConn is a WebSocket client that reads only when told to, with a small
// receive buffer: a client that stops reading, as a stalled browser tab does.
type rawConn struct {
	conn net.Conn
	r    io.Reader
}

// dialRaw connects with SO_RCVBUF set before connect (so the kernel keeps it
// small instead of autotuning); nothing is read until readUntilClosed.
func dialRaw(t testing.TB, addr, query string, rcvbuf int) *rawConn {
	t.Helper()
	nd := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
		})
		return errors.Join(err, serr)
	}}
	d := ws.Dialer{Timeout: 5 * time.Second, NetDial: nd.DialContext}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, "ws://"+addr+"/ws?"+query)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	rc := &rawConn{conn: conn, r: conn}
	if br != nil {
		rc.r = io.MultiReader(br, conn)
	}
	return rc
}

// readUntilClosed reads until the server ends the connection (or timeout)
// and returns the event ids, the newest id told (event, caught_up or
// cursor) and the close code (0 when the connection ended without one).
func (c *rawConn) readUntilClosed(timeout time.Duration) (ids []string, last string, code ws.StatusCode, err error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	rw := struct {
		io.Reader
		io.Writer
	}{bufio.NewReaderSize(c.r, 64<<10), c.conn}
	for {
		msgs, rerr := wsutil.ReadServerMessage(rw, nil)
		for _, m := range msgs {
			switch m.OpCode {
			case ws.OpText:
				var f struct{ ID, Last string }
				if json.Unmarshal(m.Payload, &f) == nil {
					if f.ID != "" {
						ids = append(ids, f.ID)
						last = f.ID
					} else if f.Last != "" {
						last = f.Last
					}
				}
			case ws.OpClose:
				code, _ = ws.ParseCloseFrameData(m.Payload)
			}
		}
		if rerr != nil {
			var ce wsutil.ClosedError
			if errors.As(rerr, &ce) {
				code = ce.Code
				rerr = nil
			} else if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) || errors.Is(rerr, syscall.ECONNRESET) {
				rerr = nil
			}
			return ids, last, code, rerr
		}
	}
}

// token signs an HS256 token for sub that expires after ttl.
func token(t testing.TB, secret, sub string, ttl time.Duration, groups ...string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(ttl).Unix()}
	if len(groups) > 0 {
		claims["groups"] = groups
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
