// Command meshd is the mesh VPN daemon: it loads the configuration, builds
// the logger, and runs a daemon.Daemon until SIGINT or SIGTERM, reloading on
// SIGHUP and telling systemd (Type=notify) how it is doing. All of the node's
// logic lives in package daemon; this file only maps flags, signals and
// errors onto it.
//
// Exit codes:
//
//	0  stopped cleanly (SIGINT/SIGTERM), or --version / --check succeeded
//	1  runtime failure: a component failed after start, or shutdown hung
//	2  usage: unknown flag or stray argument
//	3  configuration invalid (syntax, schema, or inconsistent with the
//	   certificate)
//	4  certificate, key or CRL unusable (missing, malformed, key mismatch,
//	   not issued by the CA)
//	5  TUN device, addresses or a listener could not be set up
//
// Every failure is one line (per problem) on stderr, starting "meshd: ".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/daemon"
	"github.com/meshd/meshd/internal/ratelog"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes; see the package comment.
const (
	exitOK          = 0
	exitRuntime     = 1
	exitUsage       = 2
	exitConfig      = 3
	exitCredentials = 4
	exitNetwork     = 5
)

// DefaultConfig is where the packages install the configuration.
const DefaultConfig = "/etc/meshd/meshd.toml"

// shutdownTimeout bounds Close on SIGTERM; systemd's TimeoutStopSec is 10 s.
const shutdownTimeout = 8 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit, so tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", DefaultConfig, "configuration `file`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	check := fs.Bool("check", false, "check the configuration, certificate, key and CRL, then exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: meshd [--config FILE] [--check] [--version]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshd: unexpected argument %q (see meshd --help)\n", fs.Arg(0))
		return exitUsage
	}
	if *showVersion {
		fmt.Fprintf(stdout, "meshd %s\n", version)
		return exitOK
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fail(stderr, err)
	}
	if *check {
		warnings, err := daemon.Check(cfg)
		if err != nil {
			return fail(stderr, err)
		}
		for _, w := range cfg.Warnings {
			fmt.Fprintf(stderr, "meshd: warning: %v\n", w)
		}
		for _, w := range warnings {
			fmt.Fprintf(stderr, "meshd: warning: %s\n", w)
		}
		fmt.Fprintf(stdout, "meshd: %s: configuration OK\n", *cfgPath)
		return exitOK
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.Log.Format, level, stderr, journalStream(os.Getenv("JOURNAL_STREAM"), stderr))
	for _, w := range cfg.Warnings {
		log.Warn("configuration", "warning", w.Error())
	}
	d, err := daemon.New(cfg, daemon.Options{Logger: log, LogLevel: level, Version: version, ConfigPath: *cfgPath})
	if err != nil {
		return fail(stderr, err)
	}
	return serve(d, log, stderr)
}

// serve starts d and runs it until a stop signal or a fatal error.
func serve(d *daemon.Daemon, log *slog.Logger, stderr io.Writer) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	sd := newNotifier(log)
	sd.status("starting")
	if err := d.Start(context.Background()); err != nil {
		return fail(stderr, err)
	}
	var watchdog <-chan time.Time
	if iv := sd.watchdogInterval(); iv > 0 {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		watchdog = t.C
	}
	ready := d.Ready()
	for {
		select {
		case <-ready:
			ready = nil
			sd.ready(d.Summary())
		case <-watchdog:
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := d.Healthy(ctx)
			cancel()
			if err != nil {
				log.Warn("control loop unresponsive; not pinging the watchdog", "error", err)
				break
			}
			sd.watchdog(d.Summary())
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(d, log, sd)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			return shutdown(d, log, sd, sigs)
		case <-d.Wait():
			sd.stopping()
			if err := d.Err(); err != nil {
				fmt.Fprintf(stderr, "meshd: %v\n", err)
				return exitRuntime
			}
			return exitOK
		}
	}
}

// reload applies the configuration file again, bracketed by RELOADING=1 and
// READY=1 so systemd's `reload` waits for it.
func reload(d *daemon.Daemon, log *slog.Logger, sd *notifier) {
	sd.reloading()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := d.Reload(ctx)
	cancel()
	if err != nil {
		// The daemon logged why; the running configuration is unchanged.
		log.Debug("reload refused", "error", err)
	}
	sd.ready(d.Summary())
}

// shutdown closes d within shutdownTimeout; a second signal or the timeout
// makes meshd give up waiting.
func shutdown(d *daemon.Daemon, log *slog.Logger, sd *notifier, sigs <-chan os.Signal) int {
	sd.stopping()
	closed := make(chan struct{})
	go func() {
		_ = d.Close()
		close(closed)
	}()
	t := time.NewTimer(shutdownTimeout)
	defer t.Stop()
	select {
	case <-closed:
	case <-t.C:
		log.Error("shutdown did not finish in time; exiting anyway", "timeout", shutdownTimeout)
		return exitRuntime
	case sig := <-sigs:
		log.Error("second signal during shutdown; exiting at once", "signal", sig.String())
		return exitRuntime
	}
	if err := d.Err(); err != nil {
		log.Error("stopped after a failure", "error", err)
		return exitRuntime
	}
	return exitOK
}

// newLogger builds meshd's logger on w; journal says w is journald's
// stream (journal.go): lines then carry their priority and no timestamp.
func newLogger(format config.LogFormat, level *slog.LevelVar, w io.Writer, journal bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch {
	case journal:
		h = newJournalHandler(w, format == config.LogJSON, opts)
	case format == config.LogJSON:
		h = slog.NewJSONHandler(w, opts)
	default:
		h = slog.NewTextHandler(w, opts)
	}
	// Whatever peers and strangers make meshd log, at most a few lines of a
	// kind per window reach the journal; the rest are counted.
	return slog.New(ratelog.New(h, ratelog.DefaultWindow, ratelog.DefaultBurst))
}

// fail prints err as "meshd: ..." lines and returns its exit code.
func fail(stderr io.Writer, err error) int {
	var ce *config.Errors
	if errors.As(err, &ce) {
		for _, e := range ce.List {
			fmt.Fprintf(stderr, "meshd: config: %v\n", e)
		}
		return exitConfig
	}
	fmt.Fprintf(stderr, "meshd: %v\n", err)
	return exitCode(err)
}

// exitCode maps an error from config or daemon onto the exit codes.
func exitCode(err error) int {
	var ce *config.Errors
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce), errors.Is(err, daemon.ErrConfig):
		return exitConfig
	case errors.Is(err, daemon.ErrCredentials):
		return exitCredentials
	case errors.Is(err, daemon.ErrNetwork):
		return exitNetwork
	}
	return exitRuntime
}
