package wspool

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/notifybridge/notifybridge/bridge"
)

func FuzzToken(f *testing.F) {
	f.Add("Bearer abc.def.ghi", "token=x", "notifybridge_token=y", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("", "", "", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1In0.c2ln")
	f.Add("bearer ", "token=%zz", "a=b;;notifybridge_token=", "..")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	a, err := NewJWTAuthenticator(JWTConfig{
		Secret:        []byte(testSecret),
		PublicKeysPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		Audience:      "nb",
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, authz, rawQuery, cookie, tok string) {
		q, _ := url.ParseQuery(rawQuery)
		r := &AuthRequest{Query: q, Authorization: authz, Cookie: cookie}
		got := extractToken(r)
		if got != "" && !strings.Contains(authz+rawQuery+cookie, got) && q.Get("token") != got {
			t.Fatalf("token %q from nowhere", got)
		}
		for _, s := range []string{got, tok} {
			id, err := a.Parse(s)
			if err != nil {
				if strings.ContainsAny(err.Error(), "\r\n") {
					t.Fatalf("multi-line reason %q", err)
				}
				continue
			}
			// Random input cannot carry a valid signature.
			t.Fatalf("forged token accepted: %+v", id)
		}
	})
}

func FuzzHandshake(f *testing.F) {
	f.Add([]byte("GET /ws?user=a&groups=x,y HTTP/1.1\r\nHost: h:1\r\nOrigin: http://h:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
	f.Add([]byte("GET /ws?token=a%zz HTTP/1.1\r\nHost: h\r\nOrigin: null\r\nCookie: notifybridge_token=x\r\n\r\n"))
	f.Add([]byte("POST /ws HTTP/1.1\r\nHost: h\r\n\r\nbody"))
	f.Add([]byte("GET /wsx HTTP/1.1\r\n\r\n"))
	h := &Server{cfg: Config{Auth: NewNoneAuthenticator(), ValidateName: bridge.ValidateName, Accept: func(*Request) (Source, error) { return &testSource{}, nil }}}
	h.cfg.setDefaults()
	h.perIP = map[ipKey]int{}
	h.cfg.AllowedOrigins = nil
	f.Fuzz(func(t *testing.T, data []byte) {
		buf := make([]byte, 1024)
		n, isWS, hdrEnd, err := readRequestHead(bytes.NewReader(data), buf, 0)
		if n > len(buf) || hdrEnd > n {
			t.Fatalf("n=%d hdrEnd=%d", n, hdrEnd)
		}
		if err != nil || !isWS {
			return
		}
		var st hsState
		u := ws.Upgrader{
			OnRequest: func(uri []byte) error { st.uri = string(uri); return nil },
			OnHost:    func(b []byte) error { st.host = string(b); return nil },
			OnHeader:  st.onHeader,
			OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
				ip := ipKey(netip.MustParseAddr("192.0.2.1").As16())
				c, slot, r := h.decide(&st, nil, ip)
				if slot {
					h.releaseSlot(ip)
				}
				if r != nil {
					if r.status != 400 && r.status != 401 && r.status != 403 && r.status != 503 {
						t.Fatalf("status %d", r.status)
					}
					if strings.ContainsAny(oneLine(r.reason), "\r\n") {
						t.Fatalf("reason %q", r.reason)
					}
					return nil, r.err()
				}
				c.src.Closed()
				return nil, nil
			},
		}
		_, _ = u.Upgrade(rw{Reader: bytes.NewReader(buf[:hdrEnd]), Conn: nil, w: io.Discard})
		_ = originAllowed(st.origin, st.host, nil)
		_ = originAllowed(st.origin, st.host, []string{"https://app.example", "http://h:1"})
		if h.nconn.Load() != 0 {
			t.Fatalf("slot leaked: %d", h.nconn.Load())
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	mk := func(fr ws.Frame) []byte {
		b, _ := ws.CompileFrame(ws.MaskFrame(fr))
		return b
	}
	f.Add(mk(ws.NewPingFrame([]byte("hi"))), uint16(3), uint16(100))
	f.Add(append(mk(ws.NewFrame(ws.OpText, false, []byte("ab"))), mk(ws.NewFrame(ws.OpContinuation, true, []byte("cd")))...), uint16(5), uint16(100))
	f.Add(mk(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "bye"))), uint16(0), uint16(100))
	f.Add(mk(ws.NewBinaryFrame([]byte{1})), uint16(1), uint16(100))
	f.Add(mk(ws.NewTextFrame(bytes.Repeat([]byte("x"), 300))), uint16(200), uint16(100))
	f.Add([]byte{0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, uint16(7), uint16(4096))
	f.Fuzz(func(t *testing.T, data []byte, split, maxMsg uint16) {
		if maxMsg == 0 {
			maxMsg = 1
		}
		c := &Conn{}
		cut := int(split) % (len(data) + 1)
		c.consume(data[:cut], int(maxMsg))
		c.consume(data[cut:], int(maxMsg))
		cio := ioOf(c)
		if len(cio.ctrl) > maxCtrlBytes {
			t.Fatalf("ctrl %d bytes", len(cio.ctrl))
		}
		if cr := c.closeReq.Load(); cr == nil {
			if cio.msgLen > int(maxMsg) {
				t.Fatalf("message %d over %d without close", cio.msgLen, maxMsg)
			}
			if len(cio.partial) > int(maxMsg)+14+len(data) {
				t.Fatalf("partial %d", len(cio.partial))
			}
		} else if cio.partial != nil {
			t.Fatal("partial kept after close request")
		}
		// One pass over the whole input must agree with two.
		d := &Conn{}
		d.consume(data, int(maxMsg))
		if (c.closeReq.Load() == nil) != (d.closeReq.Load() == nil) || !bytes.Equal(cio.ctrl, ioOf(d).ctrl) {
			t.Fatalf("split changes the outcome: %v/%v", c.closeReq.Load(), d.closeReq.Load())
		}
	})
}

// ioOf is c's half-done state, empty when it holds none.
func ioOf(c *Conn) connIO {
	if c.io == nil {
		return connIO{}
	}
	return *c.io
}
