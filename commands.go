package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	benchpkg "github.com/notifybridge/notifybridge/bench"
	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/node"
	"github.com/notifybridge/notifybridge/publisher"
	"github.com/notifybridge/notifybridge/transport/streams"
)

// usage is the top-level help (notifybridge help).
const usage = `notifybridge delivers events from a Redis Stream to WebSocket clients.

Usage:
  notifybridge [serve] [settings]     run the bridge (default)
  notifybridge publish --to user:42 --type alarm --data '{"k":1}' [settings]
  notifybridge bench [scenario flags] load generator and report
  notifybridge config [settings]      print the effective configuration, secrets redacted
  notifybridge dead list [--count N]  dead letters, newest first, with their reasons
  notifybridge dead requeue <id>…     append dead letters' original fields to the stream again
  notifybridge version                print the version
  notifybridge healthcheck [settings] exit 0 when admin_listen's /healthz answers (container probes)

Every setting is a flag (--replay-window 64MiB), an environment variable
(BRIDGE_REPLAY_WINDOW) and a key in the YAML file given with --config.
Run "notifybridge serve --help" for the list.
`

func printConfig(args []string, stdout, stderr io.Writer) error {
	cfg, _, err := config.Load("notifybridge config", args, stderr, nil)
	if err != nil {
		return err
	}
	cfg.Print(stdout)
	return nil
}

func publish(args []string, stdout, stderr io.Writer) error {
	var to, typ, data string
	var timeout time.Duration
	cfg, _, err := config.LoadClient("notifybridge publish", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&to, "to", "", "recipients: user:<id>, group:<name> or *, comma-separated")
		fs.StringVar(&typ, "type", "", "event type (default notification)")
		fs.StringVar(&data, "data", "", "event data, a JSON value")
		fs.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for Redis")
	})
	if err != nil {
		return err
	}
	if cfg.Embedded() {
		return errors.New("redis_url is not set: point --redis-url (or BRIDGE_REDIS_URL) at the bridge's Redis; " +
			"a bridge running with the embedded Redis prints its address (redis://127.0.0.1:<port>) in its start log")
	}
	rc, err := node.OpenRedis(cfg)
	if err != nil {
		return err
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pub := publisher.New(rc.Client, cfg.Stream, cfg.Limits())
	id, err := pub.Publish(ctx, to, typ, data)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id)
	return nil
}

// healthcheck probes /healthz on admin_listen, for images without curl.
func healthcheck(args []string, stderr io.Writer) error {
	cfg, _, err := config.LoadClient("notifybridge healthcheck", args, stderr, nil)
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(cfg.AdminListen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %s", resp.Status)
	}
	return nil
}

func bench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("notifybridge bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchpkg.Options
	var jsonOut bool
	var report, svg, extra, env string
	fs.StringVar(&o.Scenario, "scenario", "broadcast", "idle, broadcast, targeted, resume-storm or mixed (targeted and broadcast events while clients reconnect)")
	fs.IntVar(&o.Clients, "clients", 1000, "WebSocket clients")
	fs.IntVar(&o.Procs, "procs", 0, fmt.Sprintf("client processes (0: as few as allowed, at most %d clients each)", benchpkg.MaxClientsPerProcess))
	fs.IntVar(&o.Dialers, "dialers", 256, "concurrent handshakes per client process")
	fs.BoolVar(&o.RawXRead, "raw-xread", false, "broadcast/targeted: also measure a plain XREAD BLOCK subscriber in the same run, for comparison")
	fs.IntVar(&o.Slow, "slow", 0, "broadcast/targeted: extra clients that never read, to see write_timeout and eviction at work")
	fs.IntVar(&o.Rate, "rate", 100, "events per second (0: as fast as possible)")
	fs.IntVar(&o.Events, "events", 0, "events to publish (default rate × duration)")
	fs.IntVar(&o.Size, "size", 200, "bytes of data per event")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "publishing time (idle: how long to hold)")
	fs.IntVar(&o.Prefill, "prefill", 200000, "resume-storm: entries in the stream before the storm")
	fs.IntVar(&o.Missed, "missed", 10, "resume-storm: events each client missed")
	fs.Float64Var(&o.BroadcastShare, "broadcast-share", 0.01, "mixed: fraction of events (0..1) sent to everyone; the rest go to one random client each")
	fs.Float64Var(&o.Churn, "churn", 1, "mixed: percent of clients that close and reconnect each second, resuming with last_event_id")
	fs.StringVar(&o.Stream, "stream", "", "stream key (default: a fresh bench-<run> stream for a started bridge, deleted after; notifications with --ws-url)")
	fs.StringVar(&o.WSURL, "ws-url", "", "bridge WebSocket URL (ws://host:8080/ws); empty starts a bridge with the embedded Redis")
	fs.StringVar(&o.RedisURL, "redis-url", "", "the bridge's Redis (needed with --ws-url; without it, passed to the started bridge)")
	fs.StringVar(&o.AdminURL, "admin-url", "", "the bridge's admin address (http://host:9090) for RSS, CPU and goroutines")
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
	res, err := benchpkg.Run(ctx, o)
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

// dead lists and requeues dead letters: `dead list [--count N]`,
// `dead requeue <dead-letter-id>…`.
func dead(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "requeue") {
		return errors.New("usage: notifybridge dead list [--count N] [settings] | notifybridge dead requeue <id>… [settings]")
	}
	sub, args := args[0], args[1:]
	// Ids come first: requeue 1-0 2-0 --redis-url …
	var ids []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		ids, args = append(ids, args[0]), args[1:]
	}
	var count int64
	cfg, _, err := config.LoadClient("notifybridge dead "+sub, args, stderr, func(fs *flag.FlagSet) {
		fs.Int64Var(&count, "count", 20, "dead letters to list, newest first")
	})
	if err != nil {
		return err
	}
	if cfg.Embedded() {
		return errors.New("redis_url is not set: point --redis-url at the bridge's Redis")
	}
	rc, err := node.OpenRedis(cfg)
	if err != nil {
		return err
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dl, err := streams.NewDeadLetter(rc.Client, cfg.Stream, int64(cfg.DeadMaxlen.N))
	if err != nil {
		return err
	}
	if sub == "list" {
		if len(ids) > 0 {
			return fmt.Errorf("dead list takes no arguments, got %q", ids[0])
		}
		entries, err := dl.List(ctx, count)
		if err != nil {
			return err
		}
		for _, e := range entries {
			fmt.Fprintf(stdout, "%s\tid=%s\treason=%q\tfields=%v\n", e.DeadID, e.OrigID, e.Reason, e.Original)
		}
		return nil
	}
	if len(ids) == 0 {
		return errors.New("dead requeue: name at least one dead-letter id (the first column of dead list) before the settings")
	}
	for _, id := range ids {
		newID, err := dl.Requeue(ctx, cfg.Stream, id)
		if err != nil {
			return fmt.Errorf("requeue %s: %w", id, err)
		}
		fmt.Fprintf(stdout, "%s\t-> %s\n", id, newID)
	}
	return nil
}
