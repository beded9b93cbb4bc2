package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Command is the whole `notifybridge bench` subcommand: its flags, the run
// and the output. It takes every flag the root's own bench command takes,
// the same way, plus those of the ingest scenario (--bridge-bin,
// --retention), so the root can hand its arguments over as they are.
func Command(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("notifybridge bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	var jsonOut bool
	var report, svg, extra, env string
	fs.StringVar(&o.Scenario, "scenario", "broadcast", "idle, broadcast, targeted, resume-storm, mixed (targeted and broadcast events while clients reconnect), ingest (catch-up of a backlog by a started bridge, beside a raw XREADGROUP loop), "+
		"revoke (control=disconnect entries: XADD → close 4001 on the client), refresh (in-band token refresh of every client at once during targeted events) or publish (POST /v1/publish beside XADD)")
	fs.StringVar(&o.Transport, "transport", "ws", "what the clients open: ws (GET /ws), sse (GET /events) or poll (GET /poll, one request after the other)")
	fs.IntVar(&o.GroupSize, "group-size", 1000, "revoke: clients per group")
	fs.IntVar(&o.Revokes, "revokes", 100, "revoke: single users revoked one after another, 20 a second")
	fs.IntVar(&o.RevokeGroups, "revoke-groups", 3, "revoke: groups revoked whole, one after another (the last groups)")
	fs.StringVar(&o.JWTSecret, "jwt-secret", "", "refresh: the bridge's HS256 secret (default: a random one, given to the started bridge)")
	fs.DurationVar(&o.RefreshSpread, "refresh-spread", 0, "refresh: send the in-band tokens evenly over this long instead of all at once (an SDK's jitter)")
	fs.StringVar(&o.PublishKey, "publish-key", "", "publish: the bridge's publish_key (default: a random one, given to the started bridge)")
	fs.IntVar(&o.Concurrency, "concurrency", 8, "publish: requests (and XADDs) in flight")
	fs.IntVar(&o.Clients, "clients", 1000, "WebSocket clients")
	fs.IntVar(&o.Procs, "procs", 0, fmt.Sprintf("client processes (0: as few as allowed, at most %d clients each)", MaxClientsPerProcess))
	fs.IntVar(&o.Dialers, "dialers", 256, "concurrent handshakes per client process")
	fs.BoolVar(&o.RawXRead, "raw-xread", false, "broadcast/targeted: also measure a plain XREAD BLOCK subscriber in the same run, for comparison")
	fs.IntVar(&o.Slow, "slow", 0, "broadcast/targeted: extra clients that never read, to see write_timeout and eviction at work")
	fs.IntVar(&o.Rate, "rate", 100, "events per second (0: as fast as possible)")
	fs.IntVar(&o.Events, "events", 0, "events to publish (default rate × duration)")
	fs.IntVar(&o.Size, "size", 200, "bytes of data per event")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "publishing time (idle: how long to hold)")
	fs.IntVar(&o.Delivered, "delivered", 0, "ingest: entries before the backlog that the group has read already (they fill the window with older events)")
	fs.IntVar(&o.Prefill, "prefill", 200000, "resume-storm: entries in the stream before the storm; ingest: the backlog the bridge starts behind")
	fs.IntVar(&o.Missed, "missed", 10, "resume-storm: events each client missed")
	fs.Float64Var(&o.BroadcastShare, "broadcast-share", 0.01, "mixed: fraction of events (0..1) sent to everyone; the rest go to one random client each")
	fs.Float64Var(&o.Churn, "churn", 1, "mixed: percent of clients that close and reconnect each second, resuming with last_event_id")
	fs.StringVar(&o.Stream, "stream", "", "stream key (default: a fresh bench-<run> stream for a started bridge, deleted after; notifications with --ws-url; ingest: must not exist yet)")
	fs.StringVar(&o.WSURL, "ws-url", "", "bridge WebSocket URL (ws://host:8080/ws); empty starts a bridge with the embedded Redis")
	fs.StringVar(&o.RedisURL, "redis-url", "", "the bridge's Redis (needed with --ws-url and for ingest; without it, passed to the started bridge)")
	fs.StringVar(&o.AdminURL, "admin-url", "", "the bridge's admin address (http://host:9090) for RSS, CPU and goroutines")
	fs.StringVar(&o.Binary, "bridge-bin", "", "the notifybridge binary to start as the bridge and client processes (default: this one)")
	fs.StringVar(&o.Retention, "retention", "24h", "ingest: the started bridge's retention, long enough that the trimmer leaves the backlog alone")
	fs.StringVar(&extra, "bridge-args", "", "extra settings for the started bridge, space-separated")
	fs.StringVar(&env, "bridge-env", "", "extra environment for the started bridge, space-separated (GOMAXPROCS=1 GOMEMLIMIT=256MiB)")
	fs.BoolVar(&jsonOut, "json", false, "print the result as JSON")
	fs.StringVar(&report, "report", "", "write an HTML report with charts to this file")
	fs.StringVar(&svg, "svg", "", "write the run's charts (latency or clients over time, bridge memory and CPU) as one SVG file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Extra = strings.Fields(extra)
	o.Env = strings.Fields(env)
	o.Progress = stderr
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			o.Bar = true
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	res, err := Run(ctx, o)
	if err != nil {
		return err
	}
	if jsonOut {
		if err := res.WriteJSON(stdout); err != nil {
			return err
		}
	} else {
		res.WriteTable(stdout)
	}
	if report != "" {
		if err := res.WriteReport(report); err != nil {
			return err
		}
	}
	if svg != "" {
		if err := res.SVG(svg); err != nil {
			return err
		}
	}
	if res.Failed() {
		return fmt.Errorf("%d events lost, %d duplicated", res.Lost, res.Duplicated)
	}
	return nil
}
