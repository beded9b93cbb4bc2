package node

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/handlers"
	"github.com/notifybridge/notifybridge/publisher"
)

// publishBody is POST /v1/publish's body. data stays raw: it is forwarded
// byte for byte, as an entry's data field is.
type publishBody struct {
	To   *string         `json:"to"`
	Type *string         `json:"type"`
	Data json.RawMessage `json:"data"`
}

// maxPublishBody bounds a body: the largest valid event (data at
// max_event_bytes, to at max_recipients names of 256 bytes plus prefix,
// type) with room for JSON quoting of to and type.
func maxPublishBody(lim bridge.Limits) int64 {
	return int64(lim.MaxEventBytes) + int64(lim.MaxRecipients*(bridge.MaxNameBytes+len(bridge.GroupPrefix)+1)*2) + 4096
}

// publishHandler is POST /v1/publish on listen: an authenticated producer
// appends one event without reaching Redis itself. It validates with the
// ingest decoder (handlers.DecodeEntry), so what it accepts is never
// dead-lettered, and only appends (pub's MAXLEN): delivery stays the
// stream's. The key is compared in constant time over its SHA-256 (no length
// leak) and never logged.
func publishHandler(key string, pub *publisher.Publisher, lim bridge.Limits, log *zap.Logger) http.Handler {
	want := sha256.Sum256([]byte(key))
	maxBody := maxPublishBody(lim)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="notifybridge publish"`)
			publishError(w, http.StatusUnauthorized, "missing or wrong publish key (Authorization: Bearer <publish_key>)")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				publishError(w, http.StatusRequestEntityTooLarge, "body is larger than the largest valid event")
				return
			}
			publishError(w, http.StatusBadRequest, "reading the body: "+oneLineErr(err))
			return
		}
		fields, reason := publishFields(body)
		if reason == "" {
			if _, err := handlers.DecodeEntry(bridge.ID{}, fields, lim); err != nil {
				reason = err.Error()
			}
		}
		if reason != "" {
			publishError(w, http.StatusBadRequest, reason)
			return
		}
		id, err := pub.Publish(r.Context(), fields[handlers.FieldTo], fields[handlers.FieldType], fields[handlers.FieldData])
		if err != nil {
			log.Warn("publish: XADD failed", zap.Error(err))
			publishError(w, http.StatusServiceUnavailable, "redis did not take the event; retry")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"id": id})
	})
}

// publishFields parses the body into an entry's fields, or says why not.
func publishFields(body []byte) (map[string]string, string) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var b publishBody
	if err := dec.Decode(&b); err != nil {
		return nil, "body: want a JSON object {\"to\":…,\"type\":…,\"data\":…}: " + oneLineErr(err)
	}
	if dec.More() {
		return nil, "body: more than one JSON value"
	}
	fields := map[string]string{}
	if b.To != nil {
		fields[handlers.FieldTo] = *b.To
	}
	if b.Type != nil {
		fields[handlers.FieldType] = *b.Type
	}
	if b.Data != nil {
		fields[handlers.FieldData] = string(b.Data)
	}
	return fields, ""
}

func publishError(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, reason+"\n")
}

func oneLineErr(err error) string {
	s := err.Error()
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}
