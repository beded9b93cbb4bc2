// Package demo serves the fibre-monitoring alarm board: the use case
// notifybridge was written for, as a page that runs against a bridge with no
// other setup. It is a development aid: POST /demo/publish appends events
// without any credentials, so the bridge mounts it only with auth=none.
//
// The page is plain HTML/CSS/JS and imports the browser SDK, served at
// /demo/notifybridge.js from clients/js itself.
package demo

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strings"

	"github.com/notifybridge/notifybridge/bridge"
	sdk "github.com/notifybridge/notifybridge/clients/js"
)

//go:embed static
var static embed.FS

// PublishFunc appends one event by contract §1 and returns its stream id.
// Errors that wrap bridge.ErrBadEntry are the caller's fault (HTTP 400).
type PublishFunc func(ctx context.Context, to, typ, data string) (id string, err error)

// maxPublishBody bounds a /demo/publish request: the event data is limited by
// max_event_bytes (64 KiB by default) and the JSON envelope escapes it, so
// 1 MiB leaves room without letting a client make the server buffer more.
const maxPublishBody = 1 << 20

// DisconnectFunc revokes to's connections on every node through the stream
// (publisher.Disconnect: a control=disconnect entry) and returns the entry's id.
type DisconnectFunc func(ctx context.Context, to, reason string) (id string, err error)

// PresenceFunc is how many connections item (user:<id> or group:<name>) has
// on all nodes now (node.PresenceCount).
type PresenceFunc func(ctx context.Context, item string) (conns int64, err error)

// Option adds a control-plane action to the demo.
type Option func(*options)

type options struct {
	disconnect DisconnectFunc
	presence   PresenceFunc
}

// WithDisconnect serves POST /demo/disconnect ({"user","reason"} → {"id"}):
// the page's "log this user out everywhere" button. The demo side appends
// the control entry, as an application's backend would (notify.disconnect).
func WithDisconnect(f DisconnectFunc) Option { return func(o *options) { o.disconnect = f } }

// WithPresence serves GET /demo/presence?group=<name> (or user=) → {"connections":n}:
// the page's presence badge per group.
func WithPresence(f PresenceFunc) Option { return func(o *options) { o.presence = f } }

// Handler serves GET /demo (the page), GET /demo/<asset> and POST
// /demo/publish ({"to","type","data"} → {"id"}), and with the options POST
// /demo/disconnect and GET /demo/presence (404 without, and the page hides
// what needs them). Mount it on "/demo" and "/demo/" of the listen address.
func Handler(publish PublishFunc, opts ...Option) http.Handler {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // The embed pattern guarantees the directory exists.
	}
	assets := http.StripPrefix("/demo/", http.FileServerFS(sub))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /demo", func(w http.ResponseWriter, r *http.Request) {
		page(w, r, sub)
	})
	mux.HandleFunc("GET /demo/{$}", func(w http.ResponseWriter, r *http.Request) {
		page(w, r, sub)
	})
	mux.HandleFunc("GET /demo/notifybridge.js", func(w http.ResponseWriter, _ *http.Request) {
		securityHeaders(w)
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(sdk.Source)
	})
	mux.HandleFunc("GET /demo/", func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		// The page imports the SDK by URL; let a reload pick up a new binary.
		w.Header().Set("Cache-Control", "no-cache")
		assets.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /demo/publish", func(w http.ResponseWriter, r *http.Request) {
		publishHandler(w, r, publish)
	})
	// What the page may offer: the control-plane actions wired in.
	mux.HandleFunc("GET /demo/features", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(struct {
			Disconnect bool `json:"disconnect"`
			Presence   bool `json:"presence"`
		}{o.disconnect != nil, o.presence != nil})
	})
	if o.disconnect != nil {
		mux.HandleFunc("POST /demo/disconnect", func(w http.ResponseWriter, r *http.Request) {
			disconnectHandler(w, r, o.disconnect)
		})
	}
	if o.presence != nil {
		mux.HandleFunc("GET /demo/presence", func(w http.ResponseWriter, r *http.Request) {
			presenceHandler(w, r, o.presence)
		})
	}
	return mux
}

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
}

func page(w http.ResponseWriter, r *http.Request, sub fs.FS) {
	body, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		http.Error(w, "demo page missing from the build", http.StatusInternalServerError)
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

type publishRequest struct {
	To   string `json:"to"`
	Type string `json:"type"`
	// Data is the event's JSON value. It is taken as raw JSON so that what the
	// form sends is what subscribers receive, byte for byte.
	Data json.RawMessage `json:"data"`
}

func publishHandler(w http.ResponseWriter, r *http.Request, publish PublishFunc) {
	// Insisting on application/json makes a cross-site POST need a CORS
	// preflight, which nothing here answers: another site open in the same
	// browser cannot publish through a developer's local bridge.
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		oneLine(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPublishBody))
	dec.DisallowUnknownFields()
	var req publishRequest
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			oneLine(w, http.StatusRequestEntityTooLarge, "request body is larger than 1 MiB")
			return
		}
		oneLine(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		oneLine(w, http.StatusBadRequest, "invalid JSON body: more than one value")
		return
	}
	if req.To == "" {
		oneLine(w, http.StatusBadRequest, `"to" is required (user:<id>, group:<name> or *)`)
		return
	}
	if len(req.Data) == 0 {
		oneLine(w, http.StatusBadRequest, `"data" is required (any JSON value)`)
		return
	}
	id, err := publish(r.Context(), req.To, req.Type, string(req.Data))
	switch {
	case errors.Is(err, bridge.ErrBadEntry):
		oneLine(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		// Redis is down or slow: not the caller's fault, and worth retrying.
		oneLine(w, http.StatusBadGateway, "publish failed: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(struct {
		ID string `json:"id"`
	}{id})
}

// oneLine writes a refusal as a single plain-text line, like every other
// refusal of the bridge.
func oneLine(w http.ResponseWriter, code int, msg string) {
	msg = strings.Join(strings.Fields(msg), " ")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

// maxControlBody bounds a /demo/disconnect request: a name and a one-line reason.
const maxControlBody = 4 << 10

func disconnectHandler(w http.ResponseWriter, r *http.Request, disconnect DisconnectFunc) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		oneLine(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody))
	dec.DisallowUnknownFields()
	var req struct {
		User   string `json:"user"`
		Reason string `json:"reason"`
	}
	if err := dec.Decode(&req); err != nil {
		oneLine(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	if err := bridge.ValidateName(req.User); err != nil {
		oneLine(w, http.StatusBadRequest, "user: "+err.Error())
		return
	}
	id, err := disconnect(r.Context(), bridge.UserPrefix+req.User, req.Reason)
	switch {
	case errors.Is(err, bridge.ErrBadEntry):
		oneLine(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		oneLine(w, http.StatusBadGateway, "disconnect failed: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(struct {
		ID string `json:"id"`
	}{id})
}

func presenceHandler(w http.ResponseWriter, r *http.Request, presence PresenceFunc) {
	q := r.URL.Query()
	user, group := q.Get("user"), q.Get("group")
	var item string
	switch {
	case (user == "") == (group == ""):
		oneLine(w, http.StatusBadRequest, "give exactly one of user= and group=")
		return
	case user != "":
		if err := bridge.ValidateName(user); err != nil {
			oneLine(w, http.StatusBadRequest, "user: "+err.Error())
			return
		}
		item = bridge.UserPrefix + user
	default:
		if err := bridge.ValidateName(group); err != nil {
			oneLine(w, http.StatusBadRequest, "group: "+err.Error())
			return
		}
		item = bridge.GroupPrefix + group
	}
	n, err := presence(r.Context(), item)
	if err != nil {
		oneLine(w, http.StatusBadGateway, "presence failed: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(struct {
		Connections int64 `json:"connections"`
	}{n})
}
