package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// The long-poll side of the bench client (--transport poll): each client
// asks GET /poll?…&last_event_id=<last> again as soon as an answer
// {"frames":[…],"last":"<id>"} is read, the frames byte-exact as on /ws.
// A poll holds no connection between answers (the bridge closes each), so
// a client is a goroutine looping over requests, not a descriptor in an
// epoll set. A poll learns of a close only as a refusal of the next one
// (revoked: 401), so revoke and refresh run over ws and sse only. A 503
// (the node is full) is retried after a second, as the bridge's
// Retry-After asks, and counted with the reconnects that failed.

// pollIO reads poll answers for a set; its sinks are the goroutine client's.
type pollIO struct {
	*goroutineIO
	client  *http.Client
	retries atomic.Int64 // polls refused with 503 and made again after Retry-After
}

func newPollIO(phase *atomic.Int32) *pollIO {
	tr := &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{Timeout: 30 * time.Second}).DialContext}
	return &pollIO{goroutineIO: newGoroutineIO(phase), client: &http.Client{Transport: tr}}
}

// attach (conn and br are nil: polls dial for themselves) makes the
// client's first poll here, so the set's Dialers bound the first wave too,
// then loops in a goroutine until the client is closed.
func (p *pollIO) attach(c *wsClient, _ net.Conn, _ *bufio.Reader) error {
	ctx, cancel := context.WithCancel(context.Background())
	c.received, c.replayed = &p.recv, &p.replay
	c.hangup = func(bool) { cancel() }
	last := ""
	if c.cursor != (streamID{}) {
		last = c.cursor.String()
	}
	last, err := p.poll(ctx, c, last)
	if err != nil {
		cancel()
		return err
	}
	go func() {
		defer close(c.done)
		defer cancel()
		for {
			var err error
			if last, err = p.poll(ctx, c, last); err != nil {
				var st statusError
				if errors.As(err, &st) && st == http.StatusServiceUnavailable {
					// A full node (handshakes in flight, connections): an
					// SDK waits Retry-After (the bridge says 1 s) and asks
					// again from the same position.
					p.retries.Add(1)
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Second):
					}
					continue
				}
				switch {
				case ctx.Err() != nil: // closed by us
				case errors.As(err, &st):
					c.ended(int(st)) // a refusal: its HTTP status stands for the code
				default:
					c.ended(0)
				}
				return
			}
		}
	}()
	return nil
}

type statusError int

func (e statusError) Error() string { return fmt.Sprintf("poll answered %d", int(e)) }

// poll makes one request and hands its frames to the client; it returns
// the id the next poll resumes from.
func (p *pollIO) poll(ctx context.Context, c *wsClient, last string) (string, error) {
	u := c.pollURL
	if last != "" {
		u += "&last_event_id=" + last
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return last, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return last, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	now := time.Now().UnixMicro()
	if err != nil {
		return last, err
	}
	if resp.StatusCode != http.StatusOK {
		return last, statusError(resp.StatusCode)
	}
	var ans struct {
		Frames []json.RawMessage `json:"frames"`
		Last   string            `json:"last"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return last, fmt.Errorf("poll answer: %w", err)
	}
	for _, f := range ans.Frames {
		c.frameAt(f, now, &p.live)
	}
	if ans.Last != "" {
		last = ans.Last
	}
	return last, nil
}
