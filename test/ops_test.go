package test

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// readyz returns /readyz's status and one-line body.
func readyz(t testing.TB, admin string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

func waitReadyz(t testing.TB, admin string, status int, reason string, timeout time.Duration) {
	t.Helper()
	e2e.WaitFor(t, timeout, fmt.Sprintf("/readyz %d %q", status, reason), func() error {
		code, body := readyz(t, admin)
		if code != status || !strings.Contains(body, reason) {
			return fmt.Errorf("/readyz answers %d %q", code, body)
		}
		return nil
	})
}

// scrape reads /metrics through the Prometheus text parser, so a malformed
// exposition fails here as it would in Prometheus.
func scrape(t testing.TB, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value sums a family's samples whose labels include want (counter, gauge,
// or a histogram's count).
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	var sum float64
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			ok = ok && labels[want[i]] == want[i+1]
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func TestReadinessFollowsRedis(t *testing.T) {
	rs := redistest.Start(t)
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	waitReadyz(t, n.Admin, 200, "ready", 5*time.Second)

	rs.Stop()
	waitReadyz(t, n.Admin, 503, "redis does not answer", 10*time.Second)
	if code, _ := e2e.Handshake(t, n.Listen, "user=1", nil); code != 503 {
		t.Errorf("handshake while Redis is down: %d, want 503", code)
	}
	e2e.WaitFor(t, 5*time.Second, "notifybridge_ready 0", func() error {
		if v := value(scrape(t, n.Admin), "notifybridge_ready"); v != 0 {
			return fmt.Errorf("notifybridge_ready = %v", v)
		}
		return nil
	})

	rs.Start()
	waitReadyz(t, n.Admin, 200, "ready", 20*time.Second)
	c := e2e.Dial(t, n.Listen, "user=1", nil)
	c.WaitControl("caught_up", 10*time.Second)
	id := xadd(t, rs.Client(), "notifications", "to", "user:1", "data", `{"after":"restart"}`)
	c.WaitEvents([]string{id}, 10*time.Second)
}

func TestReadinessDuringDrain(t *testing.T) {
	// A short ingest_block: the drain's last step waits for the blocked read.
	n := e2e.StartNode(t, e2e.NodeOptions{Args: []string{"--shutdown-delay", "2s", "--shutdown-timeout", "10s", "--ingest-block", "200ms"}})
	clients := make([]*e2e.Client, 50)
	for i := range clients {
		clients[i] = e2e.Dial(t, n.Listen, "user=u"+strconv.Itoa(i), nil)
		clients[i].WaitControl("caught_up", 10*time.Second)
	}
	exited := make(chan error, 1)
	go func() { exited <- n.Stop(20 * time.Second) }()
	// Within shutdown_delay: not ready, new handshakes refused, the
	// connections already open still served.
	waitReadyz(t, n.Admin, 503, "draining", 2*time.Second)
	if code, _ := e2e.Handshake(t, n.Listen, "user=late", nil); code != 503 {
		t.Errorf("handshake while draining: %d, want 503", code)
	}
	select {
	case <-clients[0].Done():
		t.Fatalf("connection closed before shutdown_delay ended")
	default:
	}
	for i, c := range clients {
		if code := c.WaitClosed(10 * time.Second); code != 1001 {
			t.Errorf("client %d: close code %d, want 1001", i, code)
		}
	}
	if err := <-exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, e2e.LastLines(n.Out.String(), 30))
	}
}

func TestMetricsMoveUnderARealRun(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--log-level", "info"}})
	before := scrape(t, n.Admin)
	if v := value(before, "notifybridge_build_info"); v != 1 {
		t.Errorf("notifybridge_build_info = %v, want 1", v)
	}

	const conns, events = 20, 50
	clients := make([]*e2e.Client, conns)
	for i := range clients {
		clients[i] = e2e.Dial(t, n.Listen, "user=u"+strconv.Itoa(i)+"&groups=ops", nil)
		clients[i].WaitControl("caught_up", 10*time.Second)
	}
	var ids []string
	for i := range events {
		ids = append(ids, xadd(t, rdb, "notifications", "to", "group:ops", "type", "metric.test", "data", `{"i":`+strconv.Itoa(i)+`}`))
	}
	xadd(t, rdb, "notifications", "to", "nobody", "data", "1") // a bad recipient: dead-lettered
	for _, c := range clients {
		c.WaitEvents(ids, 10*time.Second)
	}
	// A resume served from the window.
	r := e2e.Dial(t, n.Listen, "user=u0&groups=ops&last_event_id="+ids[events/2], nil)
	r.WaitEvents(ids[events/2+1:], 10*time.Second)

	var after map[string]*dto.MetricFamily
	moved := func(name string, min float64, labels ...string) error {
		if d := value(after, name, labels...) - max(0, value(before, name, labels...)); d < min {
			return fmt.Errorf("%s%v moved by %v, want ≥ %v", name, labels, d, min)
		}
		return nil
	}
	// Acks and the group poll follow delivery by up to a second.
	e2e.WaitFor(t, 10*time.Second, "metrics", func() error {
		after = scrape(t, n.Admin)
		for _, err := range []error{
			moved("notifybridge_entries_ingested_total", events+1),
			moved("notifybridge_entries_acked_total", events+1),
			moved("notifybridge_ingest_batch_entries", 1),
			moved("notifybridge_entries_dead_lettered_total", 1),
			moved("notifybridge_replay_window_appends_total", events),
			moved("notifybridge_frames_written_total", conns*events),
			moved("notifybridge_bytes_written_total", conns*events*30),
			moved("notifybridge_delivery_latency_seconds", 1), // sampled: one live pull in 16 per connection
			moved("notifybridge_resumes_total", 1, "source", "window"),
			moved("notifybridge_replay_window_events", events),
			moved("notifybridge_replay_window_bytes", events*30),
		} {
			if err != nil {
				return err
			}
		}
		if v := value(after, "notifybridge_connections"); v != conns+1 {
			return fmt.Errorf("notifybridge_connections = %v, want %d", v, conns+1)
		}
		if v := value(after, "notifybridge_ready"); v != 1 {
			return fmt.Errorf("notifybridge_ready = %v", v)
		}
		if v := value(after, "notifybridge_consumer_group_lag_entries"); v != 0 {
			return fmt.Errorf("notifybridge_consumer_group_lag_entries = %v, want 0", v)
		}
		return nil
	})
	// Every family the alerts and the dashboard use is exposed.
	for _, name := range []string{"notifybridge_consumer_group_pending_entries", "notifybridge_max_connections",
		"process_resident_memory_bytes", "go_goroutines"} {
		if after[name] == nil {
			t.Errorf("%s not exposed", name)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	e2e.WaitFor(t, 5*time.Second, "connections gauge down", func() error {
		if v := value(scrape(t, n.Admin), "notifybridge_connections"); v != 1 {
			return fmt.Errorf("notifybridge_connections = %v, want 1", v)
		}
		return nil
	})
}

// benchResult is the part of `bench --json` the tests check.
type benchResult struct {
	Scenario     string  `json:"scenario"`
	Procs        int     `json:"client_processes"`
	Stream       string  `json:"stream"`
	Expected     int64   `json:"expected_deliveries"`
	Delivered    int64   `json:"delivered"`
	Lost         int64   `json:"lost"`
	Duplicated   int64   `json:"duplicated"`
	Misdelivered int64   `json:"misdelivered"`
	Foreign      int64   `json:"foreign_events"`
	Closed       int     `json:"clients_closed"`
	Samples      int64   `json:"latency_samples"`
	P99ms        float64 `json:"p99_ms"`
	RSSBytes     int64   `json:"rss_bytes"`
	StreamReads  int64   `json:"stream_reads"`
	Backfill     int64   `json:"backfill_reads"`
	CaughtUpS    float64 `json:"caught_up_seconds"`
}

func TestBenchScenariosLoseNothing(t *testing.T) {
	rs := redistest.Start(t)
	type benchCase struct {
		name string
		args []string
		real bool // against the real redis-server (INFO commandstats)
	}
	cases := []benchCase{
		{"idle", []string{"--scenario", "idle", "--clients", "50", "--duration", "500ms"}, false},
		{"broadcast-2-procs", []string{"--scenario", "broadcast", "--clients", "40", "--procs", "2", "--rate", "200", "--duration", "1s"}, false},
		{"targeted", []string{"--scenario", "targeted", "--clients", "50", "--rate", "300", "--duration", "1s"}, true},
		// A window far smaller than the prefill: the storm must read Redis.
		{"resume-storm", []string{"--scenario", "resume-storm", "--clients", "100", "--prefill", "5000", "--missed", "3",
			"--bridge-args", "--replay-window 256KiB"}, true},
	}
	// Two runs at once against one running node (--ws-url): both publish to
	// the node's stream, and each must count only its own events.
	ext := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--log-level", "info"}})
	for _, name := range []string{"external-node-a", "external-node-b"} {
		cases = append(cases, benchCase{name, []string{"--scenario", "broadcast", "--clients", "30", "--rate", "200", "--duration", "1s",
			"--ws-url", "ws://" + ext.Listen + "/ws", "--admin-url", "http://" + ext.Admin}, true})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each run has its own bridge and stream; most of a run is waiting
			args := append([]string{"bench", "--json"}, tc.args...)
			if tc.real {
				args = append(args, "--redis-url", rs.URL())
			}
			cmd := exec.Command(e2e.Binary, args...)
			var stderr e2e.SyncBuffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("bench %v: %v\n%s\n%s", args, err, out, e2e.LastLines(stderr.String(), 30))
			}
			var res benchResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("bench --json: %v\n%s", err, out)
			}
			if res.Lost != 0 || res.Duplicated != 0 || res.Misdelivered != 0 || res.Closed != 0 || res.Delivered != res.Expected {
				t.Fatalf("lost %d duplicated %d misdelivered %d closed %d delivered %d of %d",
					res.Lost, res.Duplicated, res.Misdelivered, res.Closed, res.Delivered, res.Expected)
			}
			if strings.HasPrefix(tc.name, "external-node") {
				if res.Stream != "notifications" || res.Expected != 30*200 {
					t.Errorf("stream %q, expected %d deliveries", res.Stream, res.Expected)
				}
				t.Logf("%d events of the other run seen and ignored", res.Foreign)
				return // the node's stream is the node's: bench leaves it alone
			}
			if !strings.HasPrefix(res.Stream, "bench-") {
				t.Errorf("stream %q: a started bridge gets a fresh bench-<run> stream", res.Stream)
			}
			if res.RSSBytes <= 0 {
				t.Errorf("no bridge RSS in the result")
			}
			switch tc.name {
			case "broadcast-2-procs":
				if res.Procs != 2 || res.Expected != 40*200 || res.Samples != res.Expected || res.P99ms <= 0 {
					t.Errorf("procs %d expected %d samples %d p99 %v", res.Procs, res.Expected, res.Samples, res.P99ms)
				}
			case "targeted":
				if res.Expected != 300 {
					t.Errorf("expected %d deliveries, want 300", res.Expected)
				}
			case "resume-storm":
				if res.Expected != 300 || res.StreamReads <= 0 || res.Backfill <= 0 || res.CaughtUpS <= 0 {
					t.Errorf("expected %d, stream reads %d, backfill pages %d, caught up %vs", res.Expected, res.StreamReads, res.Backfill, res.CaughtUpS)
				}
			}
			if tc.real { // the run's stream is gone; nothing else was touched
				if n, _ := rs.Client().Exists(context.Background(), res.Stream).Result(); n != 0 {
					t.Errorf("bench left its stream %s behind", res.Stream)
				}
			}
		})
	}
}

// TestDockerfileBuildStampsVersion runs the Dockerfile's own build command
// (no container engine here) and checks the binary is static and stamped.
func TestDockerfileBuildStampsVersion(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .*)$`).FindSubmatch(df)
	if m == nil {
		t.Fatalf("no `RUN CGO_ENABLED=0 go build` line in the Dockerfile")
	}
	out := filepath.Join(t.TempDir(), "notifybridge")
	const version = "v0.0.0-ops-test"
	line := strings.ReplaceAll(string(m[1]), "${VERSION}", version)
	line = strings.Replace(line, "-o /out/notifybridge", "-o "+out, 1)
	if !strings.Contains(line, out) || !strings.Contains(line, "-trimpath") {
		t.Fatalf("unexpected build line: %s", m[1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "sh", "-c", line)
	build.Dir = ".."
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, b)
	}
	got, err := exec.Command(out, "version").Output()
	if err != nil || strings.TrimSpace(string(got)) != "notifybridge "+version {
		t.Fatalf("version: %q %v", got, err)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("binary has a dynamic loader: not static, won't run on distroless/static")
		}
	}
}
