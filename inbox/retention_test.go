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
		db    *sql.DB
		store *countingStore
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		db, schema := dbtest.Postgres(t, "postgres")
		return &testBundle{db: db, store: &countingStore{Store: newPostgresStore(t, db, schema)}}
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

		// Two hours later everything is.
		inbox.SetNow(in, func() time.Time { return time.Now().Add(2 * time.Hour) })
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
		time.Sleep(2 * time.Millisecond) // order the stamps around cut
		cut := time.Now()
		time.Sleep(2 * time.Millisecond)
		recordN(t, bundle.db, in, "c", "new", 10)

		// The window ends at cut: the old rows are outside, the new inside.
		inbox.SetNow(in, func() time.Time { return cut.Add(time.Hour) })
		n, err := in.Purge(ctx, bundle.db)
		require.NoError(t, err)
		require.Equal(t, 10, n)
		require.Zero(t, processed(t, bundle, in, "old", 10))
		require.Equal(t, 10, processed(t, bundle, in, "new", 10))
		for _, c := range bundle.store.calls() {
			require.Equal(t, cut, c.Before)
			require.LessOrEqual(t, c.Deleted, 4)
		}
	})

	t.Run("PurgeExactMultipleOfTheBatch", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{Retention: time.Hour, RetentionBatchSize: 5})
		recordN(t, bundle.db, in, "c", "m", 10)
		inbox.SetNow(in, func() time.Time { return time.Now().Add(2 * time.Hour) })
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
		inbox.SetNow(in, func() time.Time { return time.Now().Add(100 * 365 * 24 * time.Hour) })
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
		inbox.SetNow(in, func() time.Time { return time.Now().Add(2 * time.Hour) })
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := in.Purge(cctx, bundle.db)
		require.ErrorIs(t, err, context.Canceled)
	})

	t.Run("RunRetention", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in := newInbox(t, bundle, &inbox.Config{Retention: time.Hour, RetentionBatchSize: 7, RetentionInterval: 5 * time.Millisecond})
		inbox.SetNow(in, func() time.Time { return time.Now().Add(2 * time.Hour) })
		recordN(t, bundle.db, in, "c", "first", 20)

		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.RunRetention(runCtx, bundle.db) }()

		waitFor(t, "the first purge", func() bool { return bundle.store.deleted() == 20 })
		// Rows recorded later are purged by a later round.
		recordN(t, bundle.db, in, "c", "second", 20)
		waitFor(t, "a later purge", func() bool { return bundle.store.deleted() == 40 })
		require.Zero(t, processed(t, bundle, in, "second", 20))
		for _, c := range bundle.store.calls() {
			require.Equal(t, 7, c.Limit)
		}

		stop()
		require.NoError(t, <-done)
	})
}
