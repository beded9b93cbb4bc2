package node

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(redisURL string) *config.Config {
	cfg := config.Default()
	cfg.RedisURL, cfg.Auth, cfg.NodeID = redisURL, config.AuthNone, "nodetest"
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.RedisRetryBackoff = config.NewDuration(100 * time.Millisecond)
	return cfg
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// New, Run, Shutdown against a real redis-server: ready after Run, the
// admin server and the gauge agree, and Shutdown stops every goroutine
// (goleak) and turns readiness to draining.
func TestNodeLifecycle(t *testing.T) {
	rs := redistest.Start(t)
	n, err := New(testConfig(rs.URL()), zaptest.NewLogger(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Ready(); !errors.Is(err, errStarting) {
		t.Fatalf("before Run: %v, want %v", err, errStarting)
	}
	if err := n.Run(testwait.Context(t)); err != nil {
		t.Fatal(err)
	}
	if err := n.Ready(); err != nil {
		t.Fatalf("after Run: %v", err)
	}
	admin := "http://" + n.AdminAddr().String()
	if code, body := get(t, admin+"/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz %d %q", code, body)
	}
	if _, body := get(t, admin+"/metrics"); !strings.Contains(body, "\nnotifybridge_ready 1\n") {
		t.Fatal("/metrics: no notifybridge_ready 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Ready(); !errors.Is(err, errDrainingNode) {
		t.Fatalf("after Shutdown: %v, want %v", err, errDrainingNode)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// A node whose Redis never answers serves /healthz but is not ready; a
// cancelled Run says so and Shutdown releases everything without a drain.
func TestNodeCancelledBeforeReady(t *testing.T) {
	n, err := New(testConfig("redis://127.0.0.1:1"), zaptest.NewLogger(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	admin := "http://" + n.AdminAddr().String()
	testwait.For(t, 10*time.Second, "/healthz 200 while redis is down", func() error {
		c := http.Client{Timeout: time.Second}
		resp, err := c.Get(admin + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if code, body := get(t, admin+"/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Fatalf("/readyz %d %q, want 503 starting", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// New fails cleanly (nothing left listening or running) on a port in use.
func TestNewReleasesOnError(t *testing.T) {
	rs := redistest.Start(t)
	first, err := New(testConfig(rs.URL()), zaptest.NewLogger(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = first.Shutdown(context.Background()) }()
	cfg := testConfig(rs.URL())
	cfg.AdminListen = first.AdminAddr().String()
	if _, err := New(cfg, zaptest.NewLogger(t), "test"); err == nil || !strings.Contains(err.Error(), "admin_listen") {
		t.Fatalf("New on a used admin port: %v", err)
	}
}
