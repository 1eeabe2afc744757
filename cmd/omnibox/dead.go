package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/mysql"
	"github.com/omnibox-go/omnibox/store/postgres"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

const deadUsage = `usage: omnibox dead [flags] list
       omnibox dead [flags] requeue SEQ...
       omnibox dead [flags] discard SEQ...

Lists, requeues or discards dead events: events that failed
RelayConfig.MaxAttempts times. A requeued event is pending again with its
attempts reset and keeps its place before the later events of its key; a
discarded one is deleted, and the later events of its key are then relayed.

flags:
`

// runDead is the dead-letter tool: the store's ListDead, Requeue and Discard
// from the command line.
func runDead(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dead", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("dsn", "", "database: postgres://…, mysql://USER@tcp(HOST:PORT)/DB or sqlite:PATH (required)")
	schema := fs.String("schema", "", "PostgreSQL schema of the outbox table (default: the search_path)")
	table := fs.String("table", "", "outbox table (default: the store's default, omnibox_outbox)")
	topic := fs.String("topic", "", "list: only this topic's dead events")
	limit := fs.Int("limit", 100, "list: the most events shown")
	after := fs.Int64("after", 0, "list: only events with a larger seq (paging)")
	fs.Usage = func() {
		fmt.Fprint(stderr, deadUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dsn == "" {
		fs.Usage()
		return errors.New("dead: -dsn is required")
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("dead: no action given (list, requeue or discard)")
	}
	action, rest := fs.Arg(0), fs.Args()[1:]
	var seqs []int64
	switch action {
	case "list":
		if len(rest) > 0 {
			return fmt.Errorf("dead: list takes no arguments, got %q", rest)
		}
	case "requeue", "discard":
		if len(rest) == 0 {
			return fmt.Errorf("dead: %s needs the seqs of the events (see omnibox dead list)", action)
		}
		for _, a := range rest {
			seq, err := strconv.ParseInt(a, 10, 64)
			if err != nil || seq <= 0 {
				return fmt.Errorf("dead: %q is not an event seq (a positive integer)", a)
			}
			seqs = append(seqs, seq)
		}
	default:
		fs.Usage()
		return fmt.Errorf("dead: unknown action %q (want list, requeue or discard)", action)
	}

	db, store, err := openDeadStore(ctx, *dsn, *schema, *table)
	if err != nil {
		return err
	}
	defer db.Close()
	switch action {
	case "list":
		events, err := store.ListDead(ctx, db, omnibox.ListDeadParams{AfterSeq: *after, Limit: *limit, Topic: *topic})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTOPIC\tKEY\tID\tATTEMPTS\tDIED AT\tLAST ERROR")
		for _, ev := range events {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", ev.Seq, ev.Topic, ev.Key, ev.ID, ev.Attempts,
				ev.DiedAt.Format(time.RFC3339), strings.ReplaceAll(ev.LastError, "\n", " "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d dead event(s)\n", len(events))
	case "requeue":
		n, err := store.Requeue(ctx, db, seqs)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "requeued %d of %d event(s) (the others are not dead events)\n", n, len(seqs))
	case "discard":
		n, err := store.Discard(ctx, db, seqs)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "discarded %d of %d event(s) (the others are not dead events)\n", n, len(seqs))
	}
	return nil
}

// openDeadStore opens the database named by dsn, without changing anything,
// and returns the outbox store of its dialect.
func openDeadStore(ctx context.Context, dsn, schema, table string) (*sql.DB, omnibox.DeadLetterStore, error) {
	var (
		db    *sql.DB
		store omnibox.DeadLetterStore
		err   error
	)
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		if schema != "" {
			return nil, nil, errors.New("dead: -schema is for PostgreSQL only")
		}
		if db, err = sqlite.Open(strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")); err != nil {
			return nil, nil, err
		}
		store, err = sqlite.New(&sqlite.Config{Table: table})
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		if db, err = sql.Open("postgres", dsn); err != nil {
			return nil, nil, err
		}
		store, err = postgres.New(&postgres.Config{Schema: schema, Table: table})
	case strings.HasPrefix(dsn, "mysql://"):
		if schema != "" {
			return nil, nil, errors.New("dead: -schema is for PostgreSQL only")
		}
		cfg, perr := gomysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
		if perr != nil {
			return nil, nil, fmt.Errorf("dead: MySQL DSN: %w", perr)
		}
		if db, err = sql.Open("mysql", cfg.FormatDSN()); err != nil {
			return nil, nil, err
		}
		store, err = mysql.New(&mysql.Config{Table: table})
	default:
		return nil, nil, fmt.Errorf("dead: -dsn %q: want postgres://…, mysql://USER@tcp(HOST:PORT)/DB or sqlite:PATH", dsn)
	}
	if err != nil {
		return nil, nil, errors.Join(err, db.Close())
	}
	if err := db.PingContext(ctx); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("dead: cannot reach the database: %w", err), db.Close())
	}
	return db, store, nil
}
