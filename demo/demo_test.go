package demo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/notifybridge/notifybridge/bridge"
)

type call struct{ to, typ, data string }

func newServer(t *testing.T, publish PublishFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(Handler(publish))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func post(t *testing.T, url, contentType, body string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func noPublish(context.Context, string, string, string) (string, error) {
	return "", errors.New("publish must not be called")
}

func TestPageAndAssets(t *testing.T) {
	srv := newServer(t, noPublish)
	for _, path := range []string{"/demo", "/demo/"} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(body, `src="/demo/app.js"`) || !strings.Contains(body, "Fibre alarm board") {
			t.Fatalf("GET %s: not the alarm board page", path)
		}
		if resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", path)
		}
	}
	for path, ctype := range map[string]string{
		"/demo/app.js":          "text/javascript",
		"/demo/notifybridge.js": "text/javascript",
		"/demo/style.css":       "text/css",
	} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || body == "" {
			t.Errorf("GET %s: %d %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	for _, path := range []string{"/demo/nope.js", "/demo/../go.mod", "/demox", "/ws"} {
		if resp, _ := get(t, srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestPublish(t *testing.T) {
	var got []call
	srv := newServer(t, func(_ context.Context, to, typ, data string) (string, error) {
		got = append(got, call{to, typ, data})
		return "1732451234567-0", nil
	})
	resp, body := post(t, srv.URL+"/demo/publish", "application/json",
		`{"to":"user:alice,group:ops","type":"alarm.fiber_break","data":{"fiber":"F-12", "km":3.2}}`)
	if resp.StatusCode != 200 || strings.TrimSpace(body) != `{"id":"1732451234567-0"}` {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
	// data is passed on byte for byte, inner whitespace included.
	want := call{"user:alice,group:ops", "alarm.fiber_break", `{"fiber":"F-12", "km":3.2}`}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("publish called with %+v, want %+v", got, want)
	}
	// type may be omitted (the bridge's default applies); data may be any JSON value.
	if resp, body := post(t, srv.URL+"/demo/publish", "application/json; charset=utf-8", `{"to":"*","data":"hello"}`); resp.StatusCode != 200 {
		t.Fatalf("POST without type: %d %q", resp.StatusCode, body)
	}
	if got[1] != (call{"*", "", `"hello"`}) {
		t.Fatalf("second call %+v", got[1])
	}
}

func TestPublishRefusals(t *testing.T) {
	srv := newServer(t, func(_ context.Context, to, _, _ string) (string, error) {
		switch to {
		case "bad":
			return "", &bridge.BadEntryError{Reason: "to: unknown recipient prefix in \"bad\""}
		case "user:down":
			return "", errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
		}
		return "1-0", nil
	})
	for _, tc := range []struct {
		name, ctype, body string
		code              int
		reason            string
	}{
		{"not json", "application/json", `{`, 400, "invalid JSON body"},
		{"trailing value", "application/json", `{"to":"*","data":1} {}`, 400, "more than one value"},
		{"unknown field", "application/json", `{"to":"*","data":1,"extra":2}`, 400, "unknown field"},
		{"no to", "application/json", `{"data":1}`, 400, `"to" is required`},
		{"no data", "application/json", `{"to":"*"}`, 400, `"data" is required`},
		{"bad entry", "application/json", `{"to":"bad","data":1}`, 400, "unknown recipient prefix"},
		{"redis down", "application/json", `{"to":"user:down","data":1}`, 502, "publish failed"},
		{"form post", "application/x-www-form-urlencoded", `to=*`, 415, "application/json"},
		{"no content type", "", `{"to":"*","data":1}`, 415, "application/json"},
		{"too large", "application/json", `{"to":"*","data":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := post(t, srv.URL+"/demo/publish", tc.ctype, tc.body)
			if resp.StatusCode != tc.code || !strings.Contains(body, tc.reason) {
				t.Fatalf("%d %q, want %d containing %q", resp.StatusCode, body, tc.code, tc.reason)
			}
			if strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") {
				t.Fatalf("refusal is not one line: %q", body)
			}
		})
	}
	if resp, _ := get(t, srv.URL+"/demo/publish"); resp.StatusCode == 200 {
		t.Fatal("GET /demo/publish succeeded")
	}
}

// The page imports the SDK by URL; it must be the SDK the npm package ships.
func TestServesTheSDK(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(nil).ServeHTTP(rec, httptest.NewRequest("GET", "/demo/notifybridge.js", nil))
	want, err := os.ReadFile("../clients/js/notifybridge.js")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), want) {
		t.Fatalf("GET /demo/notifybridge.js: %d, %d bytes; want the SDK (%d bytes)", rec.Code, rec.Body.Len(), len(want))
	}
}

func TestControlOptions(t *testing.T) {
	// Without options: the page is told there is nothing, and the paths are absent.
	bare := newServer(t, noPublish)
	if _, body := get(t, bare.URL+"/demo/features"); strings.TrimSpace(body) != `{"disconnect":false,"presence":false}` {
		t.Fatalf("features without options: %s", body)
	}
	if resp, _ := post(t, bare.URL+"/demo/disconnect", "application/json", `{"user":"alice"}`); resp.StatusCode == 200 {
		t.Fatal("disconnect served without WithDisconnect")
	}

	var got []string
	srv := httptest.NewServer(Handler(noPublish,
		WithDisconnect(func(_ context.Context, to, reason string) (string, error) {
			got = append(got, to+"|"+reason)
			return "9-0", nil
		}),
		WithPresence(func(_ context.Context, item string) (int64, error) {
			if item == "group:ops" {
				return 3, nil
			}
			return 0, nil
		})))
	t.Cleanup(srv.Close)
	if _, body := get(t, srv.URL+"/demo/features"); strings.TrimSpace(body) != `{"disconnect":true,"presence":true}` {
		t.Fatalf("features: %s", body)
	}
	if resp, body := post(t, srv.URL+"/demo/disconnect", "application/json", `{"user":"alice","reason":"bye"}`); resp.StatusCode != 200 || strings.TrimSpace(body) != `{"id":"9-0"}` {
		t.Fatalf("disconnect: %d %s", resp.StatusCode, body)
	}
	if len(got) != 1 || got[0] != "user:alice|bye" {
		t.Fatalf("disconnect called with %v", got)
	}
	for _, tc := range []struct{ ct, body string }{
		{"text/plain", `{"user":"alice"}`},
		{"application/json", `{"user":""}`},
		{"application/json", `{"user":"a b"}`},
		{"application/json", `{"user":"alice","to":"*"}`},
		{"application/json", `{"user":"` + strings.Repeat("x", 5000) + `"}`},
	} {
		if resp, _ := post(t, srv.URL+"/demo/disconnect", tc.ct, tc.body); resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("disconnect %s %.40s: %d, want a 4xx", tc.ct, tc.body, resp.StatusCode)
		}
	}
	if len(got) != 1 {
		t.Fatalf("a refused disconnect reached the stream: %v", got)
	}
	if _, body := get(t, srv.URL+"/demo/presence?group=ops"); strings.TrimSpace(body) != `{"connections":3}` {
		t.Fatalf("presence: %s", body)
	}
	for _, q := range []string{"", "group=ops&user=a", "group=" + strings.Repeat("g", 300), "user=a%20b"} {
		if resp, _ := get(t, srv.URL+"/demo/presence?"+q); resp.StatusCode != 400 {
			t.Errorf("presence ?%s: %d, want 400", q, resp.StatusCode)
		}
	}
}
