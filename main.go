// Command notifybridge delivers notifications from a Redis Stream to
// WebSocket clients. main.go picks the subcommand and, for serve, runs the
// node's life: load config, node.New, Run until ready, wait for SIGTERM or
// SIGINT, Shutdown within shutdown_timeout. What a node is and does lives in
// internal/node; the other subcommands are in commands.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	benchpkg "github.com/notifybridge/notifybridge/bench"
	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/node"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

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
	case "presence":
		err = presence(args, stdout, stderr)
	case "disconnect":
		err = disconnect(args, stdout, stderr)
	case "bench":
		err = benchpkg.Command(args, stdout, stderr)
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
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintf(stderr, "notifybridge %s: %v\n", cmd, err)
		return 1
	}
}

// serve runs one node until SIGTERM or SIGINT, then drains it.
func serve(args []string, stderr io.Writer) error {
	cfg, _, err := config.Load("notifybridge serve", args, stderr, nil)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	n, err := node.New(cfg, log, version)
	if err != nil {
		return err
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	runErr := n.Run(ctx) // returns once ready, or why it could not get there
	if runErr == nil {
		<-ctx.Done()
	}
	stopSignals()
	exitOnSecondSignal(log)

	deadline, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	// A drain cut short by shutdown_timeout is logged by the node; the
	// process still stopped as configured.
	_ = n.Shutdown(deadline)
	if errors.Is(runErr, context.Canceled) {
		return nil // a signal before the node was ready
	}
	return runErr
}

// exitOnSecondSignal makes a second SIGTERM or SIGINT exit at once, without
// waiting for the drain.
func exitOnSecondSignal(log *zap.Logger) {
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-again
		log.Warn("second signal: exiting now")
		os.Exit(1)
	}()
}
