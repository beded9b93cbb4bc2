package wspool

import (
	"bytes"
	"math"
	"slices"
	"testing"

	"github.com/gobwas/ws"
)

// faults lists every rule of RFC 6455 and the contract a client header
// breaks, in the order the pool checked them before it used ws.CheckHeader.
func faults(h ws.Header, fragmented bool, before, maxMsg int) []*closeReason {
	var out []*closeReason
	if h.Rsv != 0 {
		out = append(out, closeReservedBits)
	}
	if !h.Masked {
		out = append(out, closeNotMasked)
	}
	switch h.OpCode {
	case ws.OpPing, ws.OpPong, ws.OpClose:
		if !h.Fin || h.Length > 125 {
			out = append(out, closeBadControl)
		}
		return out
	case ws.OpBinary:
		return append(out, closeBinary)
	case ws.OpText:
		if fragmented {
			out = append(out, closeTextInMessage)
		}
	case ws.OpContinuation:
		if !fragmented {
			out = append(out, closeContNoMessage)
		}
	default:
		return append(out, closeUnknownOpcode)
	}
	if h.Length > int64(maxMsg-before) {
		out = append(out, closeMessageTooBig)
	}
	return out
}

// Every header gets the close code it always got, and a reason that names a
// fault it has (with one fault, that fault's).
func TestCheckHeaderCodes(t *testing.T) {
	const maxMsg = 4096
	for op := range 16 {
		for rsv := range 8 {
			for _, fin := range []bool{false, true} {
				for _, masked := range []bool{false, true} {
					for _, fragmented := range []bool{false, true} {
						for _, before := range []int{0, 100, maxMsg} {
							for _, n := range []int64{0, 1, 125, 126, 3996, 3997, maxMsg, maxMsg + 1, 1 << 16, math.MaxInt32} {
								if !fragmented && before != 0 {
									continue
								}
								h := ws.Header{Fin: fin, Rsv: byte(rsv), OpCode: ws.OpCode(op), Masked: masked, Length: n}
								want := faults(h, fragmented, before, maxMsg)
								got := checkHeader(h, fragmented, before, maxMsg)
								switch {
								case len(want) == 0 && got == nil:
								case len(want) == 0 || got == nil:
									t.Fatalf("%+v fragmented=%v before=%d: got %v, want %v", h, fragmented, before, got, want)
								case got.code != want[0].code || !slices.Contains(want, got):
									t.Fatalf("%+v fragmented=%v before=%d: got %d %q, want %d of %v", h, fragmented, before, got.code, got.text, want[0].code, want)
								case len(want) == 1 && got != want[0]:
									t.Fatalf("%+v: got %q, want %q", h, got.text, want[0].text)
								}
							}
						}
					}
				}
			}
		}
	}
}

// validCloseCode keeps the pool's rule: 1000-1003, 1007-1014, 3000-4999.
func TestValidCloseCode(t *testing.T) {
	for code := range math.MaxUint16 + 1 {
		want := code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
		if got := validCloseCode(ws.StatusCode(code)); got != want {
			t.Fatalf("validCloseCode(%d) = %v, want %v", code, got, want)
		}
	}
}

// parseHeader agrees with gobwas's reader on every header it completes, and
// asks for more bytes on every shorter prefix.
func TestParseHeader(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	for _, h := range []ws.Header{
		{Fin: true, OpCode: ws.OpText, Length: 5},
		{Fin: true, OpCode: ws.OpPing, Masked: true, Mask: mask, Length: 125},
		{OpCode: ws.OpText, Rsv: 5, Masked: true, Mask: mask, Length: 126},
		{Fin: true, OpCode: ws.OpContinuation, Masked: true, Mask: mask, Length: 1 << 16},
		{Fin: true, OpCode: 0xF, Length: math.MaxInt32},
	} {
		var b bytes.Buffer
		if err := ws.WriteHeader(&b, h); err != nil {
			t.Fatal(err)
		}
		raw := b.Bytes()
		want, err := ws.ReadHeader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		got, hlen, ok := parseHeader(raw)
		if !ok || got != want || hlen != len(raw) || hlen != ws.HeaderSize(h) {
			t.Fatalf("parseHeader(% x) = %+v %d %v, want %+v %d", raw, got, hlen, ok, want, len(raw))
		}
		for i := range raw {
			if _, _, ok := parseHeader(raw[:i]); ok {
				t.Fatalf("parseHeader of %d of %d bytes completed", i, len(raw))
			}
		}
	}
	// A 64-bit length beyond any limit is clamped, not wrapped.
	huge := []byte{0x81, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}
	if h, _, ok := parseHeader(huge); !ok || h.Length != math.MaxInt32 {
		t.Fatalf("huge length parsed as %d", h.Length)
	}
}

// The pool's own close reasons carry a valid code and a frame a client
// reads as that code and text, compiled once: sending one allocates nothing.
func TestCloseReasons(t *testing.T) {
	for _, r := range []*closeReason{
		closeNormal, closeGoingAway, closeTokenExpired, closeWriteTimeout,
		closeReservedBits, closeNotMasked, closeBadControl, closeUnknownOpcode, closeTextInMessage,
		closeContNoMessage, closeBadCloseFrame, closeBadCloseCode, closeBinary, closeMessageTooBig,
	} {
		if !validCloseCode(r.code) {
			t.Errorf("%q: code %d may not be sent", r.text, r.code)
		}
		h, payload := readServerFrame(t, r.frame)
		code, text := ws.ParseCloseFrameData(payload)
		if h.OpCode != ws.OpClose || !h.Fin || h.Masked || code != r.code || text != r.text {
			t.Errorf("%q: frame %+v reads %d %q", r.text, h, code, text)
		}
		if n := testing.AllocsPerRun(10, func() { _ = r.closeFrame() }); n != 0 {
			t.Errorf("%q: %v allocations per close frame", r.text, n)
		}
	}
	if closeWriteTimeout.code != CloseTryAgainLater || closeWriteTimeout.cause != "write_timeout" {
		t.Errorf("write timeout: %+v", closeWriteTimeout)
	}
	// A reason of the core's own is built when sent, cut to fit.
	long := &closeReason{code: CloseTryAgainLater, text: string(bytes.Repeat([]byte("x"), 200))}
	if _, payload := readServerFrame(t, long.closeFrame()); len(payload) != ws.MaxControlFramePayloadSize {
		t.Fatalf("long reason: %d bytes", len(payload))
	}
}

// readServerFrame reads the one frame b holds.
func readServerFrame(t *testing.T, b []byte) (ws.Header, []byte) {
	t.Helper()
	r := bytes.NewReader(b)
	h, err := ws.ReadHeader(r)
	if err != nil || int64(r.Len()) != h.Length {
		t.Fatalf("frame % x: %v", b, err)
	}
	return h, b[len(b)-r.Len():]
}

// A client close is answered with its code, or 1002 when it has a bad one.
func TestCloseReply(t *testing.T) {
	mask := [4]byte{9, 8, 7, 6}
	masked := func(p []byte) []byte {
		p = bytes.Clone(p)
		ws.Cipher(p, mask, 0)
		return p
	}
	for _, tc := range []struct {
		payload []byte
		want    ws.StatusCode
	}{
		{nil, CloseNormal},
		{[]byte{3}, CloseProtocolError},
		{ws.NewCloseFrameBody(1000, "bye"), CloseNormal},
		{ws.NewCloseFrameBody(1001, ""), CloseGoingAway},
		{ws.NewCloseFrameBody(4321, "app"), 4321},
		{ws.NewCloseFrameBody(1005, ""), CloseProtocolError},
		{ws.NewCloseFrameBody(5000, ""), CloseProtocolError},
	} {
		r := closeReply(masked(tc.payload), mask)
		if r.code != tc.want || (r.code != CloseProtocolError && r.text != "") {
			t.Errorf("close %v: reply %d %q, want %d", tc.payload, r.code, r.text, tc.want)
		}
	}
}
