package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
)

// sseEvent is one dispatched Server-Sent Event (or a keep-alive comment,
// with comment set).
type sseEvent struct {
	id, event, data string
	comment         bool
}

// sseClient reads GET /events over a raw socket, as a browser's
// EventSource would see it.
type sseClient struct {
	t      testing.TB
	conn   net.Conn
	status int
	header http.Header
	body   string // a refusal's body

	mu     sync.Mutex
	events []sseEvent
	retry  string
	done   chan struct{}
}

func dialSSE(t testing.TB, addr, query string, hdr ...string) *sseClient {
	t.Helper()
	return dialStream(t, addr, "/events", query, hdr...)
}

func dialStream(t testing.TB, addr, path, query string, hdr ...string) *sseClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	req := "GET " + path + "?" + query + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	for i := 0; i+1 < len(hdr); i += 2 {
		req += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s response: %v", path, err)
	}
	c := &sseClient{t: t, conn: nc, status: resp.StatusCode, header: resp.Header, done: make(chan struct{})}
	if resp.StatusCode != 200 || path != "/events" {
		b, _ := io.ReadAll(resp.Body)
		c.body = string(b)
		close(c.done)
		return c
	}
	_ = nc.SetReadDeadline(time.Time{})
	go c.read(resp.Body)
	return c
}

func (c *sseClient) read(r io.Reader) {
	defer close(c.done)
	br := bufio.NewReader(r)
	var cur sseEvent
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data != nil || cur.event != "" {
				cur.data = strings.Join(data, "\n")
				c.mu.Lock()
				c.events = append(c.events, cur)
				c.mu.Unlock()
			}
			cur, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			c.mu.Lock()
			c.events = append(c.events, sseEvent{comment: true})
			c.mu.Unlock()
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "id":
				cur.id = v
			case "event":
				cur.event = v
			case "data":
				data = append(data, v)
			case "retry":
				c.mu.Lock()
				c.retry = v
				c.mu.Unlock()
			}
		}
	}
}

func (c *sseClient) snapshot() []sseEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sseEvent(nil), c.events...)
}

// messages are the dispatched non-comment events, "close" included.
func (c *sseClient) messages() []sseEvent {
	var out []sseEvent
	for _, e := range c.snapshot() {
		if !e.comment {
			out = append(out, e)
		}
	}
	return out
}

// eventIDs are the ids of the event frames received, in order.
func (c *sseClient) eventIDs() []string {
	var out []string
	for _, e := range c.messages() {
		if e.event == "" && strings.HasPrefix(e.data, `{"id":"`) {
			out = append(out, e.id)
		}
	}
	return out
}

func (c *sseClient) waitFor(what string, cond func([]sseEvent) error) {
	c.t.Helper()
	e2e.WaitFor(c.t, 10*time.Second, what, func() error { return cond(c.messages()) })
}

func (c *sseClient) waitControl(kind string) sseEvent {
	c.t.Helper()
	var got sseEvent
	c.waitFor("control "+kind, func(es []sseEvent) error {
		for _, e := range es {
			if strings.HasPrefix(e.data, `{"control":"`+kind+`"`) {
				got = e
				return nil
			}
		}
		return fmt.Errorf("no %s in %v", kind, es)
	})
	return got
}

func (c *sseClient) waitEvents(want []string) {
	c.t.Helper()
	c.waitFor(fmt.Sprint("events ", want), func([]sseEvent) error {
		if got := c.eventIDs(); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
}

func (c *sseClient) waitClosed() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("SSE stream not ended; got %v", c.snapshot())
	}
}
