package inbox

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/nilcheck"
)

// Purge deletes the inbox rows recorded longer ago than [Config.Retention]
// and returns how many it deleted. It deletes in batches of
// [Config.RetentionBatchSize] rows, one bounded DELETE statement each, until
// a batch comes back short, so it never runs one unbounded statement however
// large the backlog. Given a *sql.DB each batch commits on its own; given a
// *sql.Tx they all commit with it (and hold their locks until then).
//
// The window is measured by the database, on the clock that stamped the
// rows: each batch deletes rows recorded more than Retention before the
// database's current time, so this process's clock (however skewed) plays no
// part. With Retention zero (keep forever)
// Purge deletes nothing and returns 0. When ctx ends between batches Purge
// returns what it deleted so far and ctx's error.
func (i *Inbox) Purge(ctx context.Context, db omnibox.DBTX) (int, error) {
	if err := nilcheck.Check("inbox: Purge", "db", db, omnibox.ErrNilDB); err != nil {
		return 0, err
	}
	if i.config.Retention == 0 {
		return 0, nil
	}
	limit := i.config.RetentionBatchSize
	total := 0
	for {
		n, err := i.store.Purge(ctx, db, PurgeParams{Limit: limit, OlderThan: i.config.Retention})
		total += n
		if err != nil {
			return total, fmt.Errorf("inbox: purging rows recorded more than %s ago: %w", i.config.Retention, err)
		}
		if n < limit {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// RunRetention purges old inbox rows ([Inbox.Purge]) at once and then every
// [Config.RetentionInterval], until ctx ends; it then returns nil. Errors are
// logged and the purge is tried again at the next interval. Run it as a
// goroutine in one or more replicas: concurrent purges are safe, though one
// is enough. It returns [ErrRetentionDisabled] at once when
// [Config.Retention] is zero, and an error wrapping [omnibox.ErrNilDB] for
// a nil db.
func (i *Inbox) RunRetention(ctx context.Context, db *sql.DB) error {
	if err := nilcheck.Check("inbox: RunRetention", "db", db, omnibox.ErrNilDB); err != nil {
		return err
	}
	if i.config.Retention == 0 {
		return ErrRetentionDisabled
	}
	log := i.config.Logger
	log.InfoContext(ctx, "inbox retention started",
		slog.Duration("retention", i.config.Retention), slog.Duration("interval", i.config.RetentionInterval))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			log.InfoContext(context.WithoutCancel(ctx), "inbox retention stopped")
			return nil
		case <-timer.C:
		}
		n, err := i.Purge(ctx, db)
		switch {
		case err != nil && ctx.Err() != nil:
			// Stopping: the error is the cancellation.
		case err != nil:
			log.ErrorContext(ctx, "inbox retention failed; retrying at the next interval",
				slog.Any("error", err), slog.Int("deleted", n), slog.Duration("interval", i.config.RetentionInterval))
		case n > 0:
			log.DebugContext(ctx, "inbox retention purged old rows", slog.Int("deleted", n))
		}
		timer.Reset(i.config.RetentionInterval)
	}
}
