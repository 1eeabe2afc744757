// Command omnibox is omnibox's command-line tool.
//
// Usage:
//
//	omnibox demo [flags]   run the demo: a service writing users and UserCreated
//	                       events, a relay, an in-process Kafka broker and a consumer
//	omnibox bench [flags]  run the benchmark program (docs/benchmarks.md)
//	omnibox dead [flags] list|requeue|discard [SEQ...]
//	                       list, requeue or discard dead events
//
// Run "omnibox <command> -h" for a command's flags.
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "omnibox:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: omnibox <command> [flags]

commands:
  demo    write users and UserCreated events in one transaction each, relay
          them to an in-process Kafka broker, consume them, print a summary
  bench   measure the relay's drain throughput, the writer's cost and the raw
          database and broker ceilings (run "omnibox bench -h" for flags)
  dead    list, requeue or discard dead events of an outbox table
          (run "omnibox dead -h" for flags)
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "dead":
		return runDead(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
