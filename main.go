// Command notifybridge delivers notifications from a Redis Stream to
// WebSocket clients. This file only parses the command line and wires the
// rooms together: config/, transport/, bridge/ and handlers/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	benchpkg "github.com/notifybridge/notifybridge/bench"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

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

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args, stderr)
	case "publish":
		err = publish(args, stdout, stderr)
	case "bench":
		err = bench(args, stdout, stderr)
	case "bench-client": // hidden: one process's share of a bench run's clients
		err = benchpkg.ClientMain(os.Stdin, stdout)
	case "config":
		err = printConfig(args, stdout, stderr)
	case "dead":
		err = dead(args, stdout, stderr)
	case "healthcheck":
		err = healthcheck(args, stderr)
	case "version":
		fmt.Fprintln(stdout, "notifybridge", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "notifybridge: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintf(stderr, "notifybridge %s: %v\n", cmd, err)
		return 1
	}
}
