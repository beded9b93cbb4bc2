package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

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
  notifybridge disconnect --to user:42 [--reason "logged out"] [settings]
                                      close those connections on every node (4001) and refuse their older tokens
  notifybridge presence --user 42 | --group ops [settings]
                                      connections on all nodes together (at most 5 s stale)
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
	return withPublisher("notifybridge publish", args, stdout, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&to, "to", "", "recipients: user:<id>, group:<name> or *, comma-separated")
		fs.StringVar(&typ, "type", "", "event type (default notification)")
		fs.StringVar(&data, "data", "", "event data, a JSON value")
	}, func(ctx context.Context, pub *publisher.Publisher) (string, error) {
		return pub.Publish(ctx, to, typ, data)
	})
}

// disconnect revokes connections through the stream (publisher.Disconnect).
func disconnect(args []string, stdout, stderr io.Writer) error {
	var to, reason string
	return withPublisher("notifybridge disconnect", args, stdout, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&to, "to", "", "whose connections: user:<id>, group:<name> or *, comma-separated")
		fs.StringVar(&reason, "reason", "", "one line sent in the close frame (revoked: <reason>)")
	}, func(ctx context.Context, pub *publisher.Publisher) (string, error) {
		return pub.Disconnect(ctx, to, reason)
	})
}

// withPublisher runs do with a publisher on the bridge's stream and prints
// the entry id it returns.
func withPublisher(name string, args []string, stdout, stderr io.Writer, flags func(*flag.FlagSet),
	do func(context.Context, *publisher.Publisher) (string, error)) error {
	return withRedis(name, args, stdout, stderr, flags, func(ctx context.Context, cfg *config.Config, rc *node.Redis) (string, error) {
		return do(ctx, publisher.New(rc.Client, cfg.Stream, cfg.Limits()))
	})
}

// withRedis loads the client settings with the command's flags, opens the
// bridge's Redis, runs do and prints the line it returns.
func withRedis(name string, args []string, stdout, stderr io.Writer, flags func(*flag.FlagSet),
	do func(context.Context, *config.Config, *node.Redis) (string, error)) error {
	var timeout time.Duration
	cfg, _, err := config.LoadClient(name, args, stderr, func(fs *flag.FlagSet) {
		flags(fs)
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
	line, err := do(ctx, cfg, rc)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, line)
	return nil
}

// presence prints the connections of one user or group on all live nodes.
func presence(args []string, stdout, stderr io.Writer) error {
	var user, group string
	return withRedis("notifybridge presence", args, stdout, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&user, "user", "", "user id")
		fs.StringVar(&group, "group", "", "group name")
	}, func(ctx context.Context, cfg *config.Config, rc *node.Redis) (string, error) {
		item, err := node.PresenceItem(user, group)
		if err != nil {
			return "", err
		}
		conns, nodes, err := node.PresenceCount(ctx, rc.Client, cfg.Stream, item)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %d connections on %d nodes", item, conns, nodes), nil
	})
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
