package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
)

func TestRetention(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		db     *sql.DB
		schema string
		store  *countingStore
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		db, schema := dbtest.Postgres(t, "postgres")
		return &testBundle{db: db, schema: schema, store: &countingStore{Store: newPostgresStore(t, db, schema)}}
	}
	// ageRows moves every row's processed_at back by d, on the database.
	ageRows := func(t *testing.T, bundle *testBundle, d time.Duration) {
		t.Helper()
		_, err := bundle.db.Exec(`UPDATE "`+bundle.schema+`".omnibox_inbox SET processed_at = processed_at - $1::bigint * interval '1 microsecond'`, d.Microseconds())
		require.NoError(t, err)
	}
	newInbox := func(t *testing.T, bundle *testBundle, config *inbox.Config) *inbox.Inbox {
		t.Helper()
		in, err := inbox.New(bundle.store, config)
		require.NoError(t, err)
		return in
	}
	// processed counts the messages of ids that are still recorded.
	processed := func(t *testing.T, bundle *testBundle, in *inbox.Inbox, prefix string, n int) int {
		t.Helper()
		count := 0
		for i := range n {
			done, err := in.AlreadyProcessed(context.Background(), bundle.db, "c", fmt.Sprintf("%s-%d", prefix, i))
			require.NoError(t, err)
			if done {
				count++
			}
		}
		return count
	}
	ctx := context.Background()

	// The window is measured on the database's clock, which stamped the
	// rows, whatever this process's clock says.
	t.Run("PurgeUsesTheDatabaseClock", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{Retention: time.Hour})
		recordN(t, bundle.db, in, "c", "old", 3)
		ageRows(t, bundle, 2*time.Hour) // recorded two hours ago, by the database's clock
		recordN(t, bundle.db, in, "c", "new", 3)

		// Only the rows two hours old on the database's clock are purged:
		// Purge has no application clock to be skewed (it used to compute
		// the cutoff from time.Now, so a clock a century ahead purged
		// everything, and one a century behind nothing).
		n, err := in.Purge(ctx, bundle.db)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		require.Zero(t, processed(t, bundle, in, "old", 3))
		require.Equal(t, 3, processed(t, bundle, in, "new", 3))

		recordN(t, bundle.db, in, "c", "older", 3)
		ageRows(t, bundle, 2*time.Hour)
		n, err = in.Purge(ctx, bundle.db)
		require.NoError(t, err)
		require.Equal(t, 6, n, "the three older rows and the three new ones, aged too")
		require.Zero(t, processed(t, bundle, in, "older", 3))
	})

	t.Run("PurgeInBoundedBatches", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{Retention: time.Hour, RetentionBatchSize: 10})
		recordN(t, bundle.db, in, "c", "m", 25)

		// Nothing is an hour old yet.
		n, err := in.Purge(ctx, bundle.db)
		require.NoError(t, err)
		require.Zero(t, n)
		require.Equal(t, 25, processed(t, bundle, in, "m", 25))

		// Two hours later (on the database's clock) everything is.
		ageRows(t, bundle, 2*time.Hour)
		calls := len(bundle.store.calls())
		n, err = in.Purge(ctx, bundle.db)
		require.NoError(t, err)
		require.Equal(t, 25, n)
		require.Zero(t, processed(t, bundle, in, "m", 25))
		// Three statements of at most 10 rows each; the short one ends it.
		var deleted []int
		for _, c := range bundle.store.calls()[calls:] {
			require.Equal(t, 10, c.Limit)
			deleted = append(deleted, c.Deleted)
		}
		require.Equal(t, []int{10, 10, 5}, deleted)
	})

	t.Run("PurgeKeepsRowsInsideTheWindow", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{Retention: time.Hour, RetentionBatchSize: 4})
		recordN(t, bundle.db, in, "c", "old", 10)
		ageRows(t, bundle, time.Hour+time.Minute)
		recordN(t, bundle.db, in, "c", "new", 10)
		ageRows(t, bundle, time.Hour-2*time.Minute) // old: 2h-1min, new: 58 min

		// The old rows are outside the window, the new inside.
		n, err := in.Purge(ctx, bundle.db)
		require.NoError(t, err)
		require.Equal(t, 10, n)
		require.Zero(t, processed(t, bundle, in, "old", 10))
		require.Equal(t, 10, processed(t, bundle, in, "new", 10))
		for _, c := range bundle.store.calls() {
			require.Equal(t, time.Hour, c.OlderThan)
			require.LessOrEqual(t, c.Deleted, 4)
		}
	})

	t.Run("PurgeExactMultipleOfTheBatch", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{Retention: time.Hour, RetentionBatchSize: 5})
		recordN(t, bundle.db, in, "c", "m", 10)
		ageRows(t, bundle, 2*time.Hour)
		n, err := in.Purge(ctx, bundle.db)
		require.NoError(t, err)
		require.Equal(t, 10, n)
		require.Len(t, bundle.store.calls(), 3) // 5, 5, then an empty batch
	})

	t.Run("PurgeKeepForever", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{})
		recordN(t, bundle.db, in, "c", "m", 3)
		ageRows(t, bundle, 100*365*24*time.Hour)
		n, err := in.Purge(ctx, bundle.db)
		require.NoError(t, err)
		require.Zero(t, n)
		require.Empty(t, bundle.store.calls())
		require.Equal(t, 3, processed(t, bundle, in, "m", 3))

		require.ErrorIs(t, in.RunRetention(ctx, bundle.db), inbox.ErrRetentionDisabled)
		_, err = in.Purge(ctx, nil)
		require.ErrorIs(t, err, omnibox.ErrNilDB)
		require.ErrorIs(t, in.RunRetention(ctx, nil), omnibox.ErrNilDB)
	})

	t.Run("PurgeStopsWhenContextEnds", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{Retention: time.Hour, RetentionBatchSize: 1})
		recordN(t, bundle.db, in, "c", "m", 3)
		ageRows(t, bundle, 2*time.Hour)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := in.Purge(cctx, bundle.db)
		require.ErrorIs(t, err, context.Canceled)
	})

	t.Run("RunRetention", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{Retention: time.Hour, RetentionBatchSize: 7, RetentionInterval: 5 * time.Millisecond})
		recordN(t, bundle.db, in, "c", "first", 20)
		ageRows(t, bundle, 2*time.Hour)

		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.RunRetention(runCtx, bundle.db) }()

		waitFor(t, "the first purge", func() bool { return bundle.store.deleted() == 20 })
		// Rows recorded later are purged by a later round.
		recordN(t, bundle.db, in, "c", "second", 20)
		ageRows(t, bundle, 2*time.Hour)
		waitFor(t, "a later purge", func() bool { return bundle.store.deleted() == 40 })
		require.Zero(t, processed(t, bundle, in, "second", 20))
		for _, c := range bundle.store.calls() {
			require.Equal(t, 7, c.Limit)
		}

		stop()
		require.NoError(t, <-done)
	})
}
