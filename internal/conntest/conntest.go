// Package conntest is what tests see of one connection: the server's frames
// decoded (contract §3) and a peer that records the core's wakes and its
// close. The bridge's unit tests, its property runner (bridge/bridgetest)
// and the end-to-end client (internal/e2e) share it, so a field the contract
// adds to a frame is added here once. It imports nothing of ours, so the
// bridge's own tests may use it.
package conntest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// Frame is one message a client received: an event or a control frame.
type Frame struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Control   string          `json:"control"`
	Last      string          `json:"last"`
	Requested string          `json:"requested"`
	Oldest    string          `json:"oldest"`
	// Raw is the payload as received.
	Raw string `json:"-"`
}

func (f Frame) String() string {
	if f.Control != "" {
		return fmt.Sprintf("%s(last=%s req=%s old=%s)", f.Control, f.Last, f.Requested, f.Oldest)
	}
	return f.ID
}

// Parse decodes a text message's payload. A payload that is not a JSON
// object is returned with Control "unparseable" and the error.
func Parse(payload []byte) (Frame, error) {
	var f Frame
	err := json.Unmarshal(payload, &f)
	if err != nil {
		f = Frame{Control: "unparseable"}
	}
	f.Raw = string(payload)
	return f, err
}

// Decode decodes one whole server frame as the core builds it: a final,
// unmasked text frame (RFC 6455 §5.2) carrying a JSON payload. Anything else
// fails tb.
func Decode(tb testing.TB, b []byte) Frame {
	tb.Helper()
	if len(b) < 2 || b[0] != 0x81 || b[1]&0x80 != 0 {
		tb.Fatalf("not an unmasked final text frame: % x", b)
	}
	h := 2
	switch b[1] {
	case 126:
		h = 4
	case 127:
		h = 10
	}
	if len(b) < h {
		tb.Fatalf("frame shorter than its header: % x", b)
	}
	f, err := Parse(b[h:])
	if err != nil {
		tb.Fatalf("frame %q: %v", b[h:], err)
	}
	return f
}

// Frames is what one connection received, in order.
type Frames []Frame

// Record decodes each whole server frame in bufs (a Pull's output) onto fs.
func (fs *Frames) Record(tb testing.TB, bufs [][]byte) {
	tb.Helper()
	for _, b := range bufs {
		*fs = append(*fs, Decode(tb, b))
	}
}

// IDs lists the event ids, in order.
func (fs Frames) IDs() []string {
	var out []string
	for _, f := range fs {
		if f.Control == "" {
			out = append(out, f.ID)
		}
	}
	return out
}

// Controls lists the control frames of kind.
func (fs Frames) Controls(kind string) []Frame {
	var out []Frame
	for _, f := range fs {
		if f.Control == kind {
			out = append(out, f)
		}
	}
	return out
}

// String lists the frames briefly (event ids, control kinds with their ids).
func (fs Frames) String() string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.String())
		b.WriteByte(' ')
	}
	return b.String()
}

// Peer is a bridge.Peer that records wakes and the close, as the pool's
// connection would act on them.
type Peer struct {
	woken chan struct{}

	mu     sync.Mutex
	code   int
	reason string
}

// NewPeer returns a peer that was never woken nor closed.
func NewPeer() *Peer { return &Peer{woken: make(chan struct{}, 1)} }

// Wake never blocks: wakes that are not yet received collapse into one, as
// the pool schedules one drain for several wakes.
func (p *Peer) Wake() {
	select {
	case p.woken <- struct{}{}:
	default:
	}
}

// Woken receives a value after a Wake not yet received.
func (p *Peer) Woken() <-chan struct{} { return p.woken }

// Close records the first close; later ones are ignored, as on a socket.
func (p *Peer) Close(code int, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.code == 0 {
		p.code, p.reason = code, reason
	}
}

// Closed is the recorded close, code 0 while open.
func (p *Peer) Closed() (code int, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code, p.reason
}
