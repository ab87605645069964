// Command labprobe runs the e2e lab's NAT probe (package probe) inside a
// network namespace. The lab starts it with `ip netns exec`.
//
//	labprobe serve -udp A:p,A:q,B:p [-tcp A:p]   prints "ready" once bound, runs until SIGTERM
//	labprobe echo -bind 0.0.0.0:P -to A:p,B:p,A:q [-timeout 3s]
//	labprobe filter -bind 0.0.0.0:P -to A:p [-window 300ms] [-timeout 3s]
//	labprobe tcp -to A:p [-timeout 3s]
//
// Client commands print one JSON result (probe.EchoResult, FilterResult,
// TCPResult) on stdout and exit 0, or print the error on stderr and exit 2
// when a target did not answer (probe.ErrNoReply) and 1 for anything else.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshd/meshd/e2e/internal/probe"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "labprobe:", err)
		if errors.Is(err, probe.ErrNoReply) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: labprobe serve|echo|filter|punch|tcp [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	udp := fs.String("udp", "", "serve: comma-separated UDP listen addresses")
	tcp := fs.String("tcp", "", "serve: comma-separated TCP listen addresses")
	bind := fs.String("bind", "0.0.0.0:0", "client: local UDP address")
	to := fs.String("to", "", "client: comma-separated targets")
	timeout := fs.Duration("timeout", 3*time.Second, "client: give up after this long")
	window := fs.Duration("window", 300*time.Millisecond, "filter: how long to wait for the other replies; punch: how long to go on once the target was heard")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch args[0] {
	case "serve":
		return serve(*udp, *tcp)
	case "echo":
		b, targets, err := clientAddrs(*bind, *to)
		if err != nil {
			return err
		}
		obs, err := probe.Echo(ctx, b, targets)
		if err != nil {
			return err
		}
		return printJSON(probe.EchoResult{Observed: obs})
	case "filter":
		b, target, err := clientTarget(args[0], *bind, *to)
		if err != nil {
			return err
		}
		res, err := probe.Filter(ctx, b, target, *window)
		if err != nil {
			return err
		}
		return printJSON(res)
	case "punch":
		b, target, err := clientTarget(args[0], *bind, *to)
		if err != nil {
			return err
		}
		heard, err := probe.Punch(ctx, b, target, *window)
		if err != nil {
			return err
		}
		return printJSON(probe.PunchResult{Heard: heard})
	case "tcp":
		targets, err := parseList(*to)
		if err != nil || len(targets) != 1 {
			return fmt.Errorf("tcp takes exactly one target: %q", *to)
		}
		obs, err := probe.TCPEcho(ctx, targets[0])
		if err != nil {
			return err
		}
		return printJSON(probe.TCPResult{Observed: obs})
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func serve(udp, tcp string) error {
	u, err := parseList(udp)
	if err != nil {
		return err
	}
	tc, err := parseList(tcp)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := probe.NewServer(probe.ServerOptions{UDP: u, TCP: tc, Logger: log})
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s.Start()
	fmt.Println("ready")
	<-sig
	_ = s.Close()
	<-s.Done()
	return nil
}

func clientAddrs(bind, to string) (netip.AddrPort, []netip.AddrPort, error) {
	b, err := netip.ParseAddrPort(bind)
	if err != nil {
		return b, nil, fmt.Errorf("-bind: %w", err)
	}
	targets, err := parseList(to)
	if err != nil {
		return b, nil, err
	}
	if len(targets) == 0 {
		return b, nil, errors.New("-to: no targets")
	}
	return b, targets, nil
}

// clientTarget is clientAddrs for the commands that take exactly one target.
func clientTarget(cmd, bind, to string) (netip.AddrPort, netip.AddrPort, error) {
	b, targets, err := clientAddrs(bind, to)
	if err == nil && len(targets) != 1 {
		err = fmt.Errorf("%s takes exactly one target, got %d", cmd, len(targets))
	}
	if err != nil {
		return b, netip.AddrPort{}, err
	}
	return b, targets[0], nil
}

func parseList(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(f)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", f, err)
		}
		out = append(out, ap)
	}
	return out, nil
}

func printJSON(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}
