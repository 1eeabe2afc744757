package inbox_test

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/postgres"
)

func TestNew(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		store inbox.Store
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		return &testBundle{store: &countingStore{}}
	}

	t.Run("NilStore", func(t *testing.T) {
		t.Parallel()
		_, err := inbox.New(nil, &inbox.Config{})
		require.ErrorIs(t, err, omnibox.ErrNilStore)
	})
	t.Run("TypedNilStore", func(t *testing.T) {
		t.Parallel()
		// A store constructor that failed, its error ignored: the interface
		// holds a nil *postgres.InboxStore.
		st, err := postgres.NewInbox(&postgres.InboxConfig{Schema: "bad schema"})
		require.Error(t, err)
		_, err = inbox.New(st, &inbox.Config{})
		require.ErrorIs(t, err, omnibox.ErrNilStore)
		require.EqualError(t, err, "inbox: New: store is a nil *postgres.InboxStore (did postgres.NewInbox return an error?)")
	})
	t.Run("NilConfig", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		_, err := inbox.New(bundle.store, nil)
		require.ErrorIs(t, err, omnibox.ErrNilConfig)
	})
	t.Run("InvalidConfig", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		for field, config := range map[string]*inbox.Config{
			"Retention":          {Retention: -time.Second},
			"RetentionBatchSize": {RetentionBatchSize: -1},
			"RetentionInterval":  {RetentionInterval: -time.Second},
		} {
			_, err := inbox.New(bundle.store, config)
			require.ErrorContains(t, err, "Config."+field)
		}
	})
	t.Run("ZeroConfig", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		in, err := inbox.New(bundle.store, &inbox.Config{})
		require.NoError(t, err)
		require.NotNil(t, in)
	})
}

func TestInbox(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		db    *sql.DB
		inbox *inbox.Inbox
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		db, schema := dbtest.Postgres(t, "postgres")
		in, err := inbox.New(newPostgresStore(t, db, schema), &inbox.Config{})
		require.NoError(t, err)
		return &testBundle{db: db, inbox: in}
	}
	ctx := context.Background()

	t.Run("RecordOnceTxCommitAndRollback", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)

		// Rolled back: the record goes with the transaction.
		tx, err := bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		isNew, err := bundle.inbox.RecordOnceTx(ctx, tx, "c", "m-1")
		require.NoError(t, err)
		require.True(t, isNew)
		require.NoError(t, tx.Rollback())
		done, err := bundle.inbox.AlreadyProcessed(ctx, bundle.db, "c", "m-1")
		require.NoError(t, err)
		require.False(t, done)

		// Committed: the next delivery is a duplicate, and the transaction
		// that found it stays usable.
		tx, err = bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		isNew, err = bundle.inbox.RecordOnceTx(ctx, tx, "c", "m-1")
		require.NoError(t, err)
		require.True(t, isNew)
		require.NoError(t, tx.Commit())

		tx, err = bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		isNew, err = bundle.inbox.RecordOnceTx(ctx, tx, "c", "m-1")
		require.NoError(t, err)
		require.False(t, isNew)
		var one int
		require.NoError(t, tx.QueryRowContext(ctx, `SELECT 1`).Scan(&one))
		require.NoError(t, tx.Commit())

		// Another consumer processes the same message once of its own.
		tx, err = bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		isNew, err = bundle.inbox.RecordOnceTx(ctx, tx, "other", "m-1")
		require.NoError(t, err)
		require.True(t, isNew)
		require.NoError(t, tx.Commit())
	})

	t.Run("RecordOnceTxConcurrent", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)

		// Eight deliveries of each of 20 messages at once, each in its own
		// transaction: exactly one per message sees isNew.
		const deliveries, messages = 8, 20
		var (
			mu  sync.Mutex
			won = map[string]int{}
			wg  sync.WaitGroup
		)
		for range deliveries {
			wg.Go(func() {
				for m := range messages {
					id := "m-" + string(rune('a'+m))
					tx, err := bundle.db.BeginTx(ctx, nil)
					if !assertNoError(t, err) {
						return
					}
					isNew, err := bundle.inbox.RecordOnceTx(ctx, tx, "c", id)
					if !assertNoError(t, err) {
						_ = tx.Rollback()
						return
					}
					if !assertNoError(t, tx.Commit()) {
						return
					}
					if isNew {
						mu.Lock()
						won[id]++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		require.Len(t, won, messages)
		for id, n := range won {
			require.Equal(t, 1, n, "message %s recorded as new %d times", id, n)
		}
	})

	t.Run("RecordOnceTxWaitsForRollback", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)

		// The first delivery holds the record uncommitted; the second waits
		// for it and, when it rolls back (its handler failed), does the work.
		first, err := bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		isNew, err := bundle.inbox.RecordOnceTx(ctx, first, "c", "m-1")
		require.NoError(t, err)
		require.True(t, isNew)

		result := make(chan bool, 1)
		go func() {
			second, err := bundle.db.BeginTx(ctx, nil)
			if !assertNoError(t, err) {
				result <- false
				return
			}
			defer func() { _ = second.Rollback() }()
			isNew, err := bundle.inbox.RecordOnceTx(ctx, second, "c", "m-1")
			assertNoError(t, err)
			result <- isNew
		}()
		require.NoError(t, first.Rollback())
		require.True(t, <-result)
	})

	t.Run("TwoStep", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)

		done, err := bundle.inbox.AlreadyProcessed(ctx, bundle.db, "c", "m-1")
		require.NoError(t, err)
		require.False(t, done)

		tx, err := bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, bundle.inbox.RecordTx(ctx, tx, "c", "m-1"))
		// Inside the transaction the record is visible, outside not yet.
		done, err = bundle.inbox.AlreadyProcessed(ctx, tx, "c", "m-1")
		require.NoError(t, err)
		require.True(t, done)
		done, err = bundle.inbox.AlreadyProcessed(ctx, bundle.db, "c", "m-1")
		require.NoError(t, err)
		require.False(t, done)
		require.NoError(t, tx.Commit())

		done, err = bundle.inbox.AlreadyProcessed(ctx, bundle.db, "c", "m-1")
		require.NoError(t, err)
		require.True(t, done)

		tx, err = bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		err = bundle.inbox.RecordTx(ctx, tx, "c", "m-1")
		require.ErrorIs(t, err, inbox.ErrAlreadyProcessed)
		require.NoError(t, tx.Rollback())
	})

	t.Run("InvalidArguments", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)

		tx, err := bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()

		_, err = bundle.inbox.RecordOnceTx(ctx, nil, "c", "m")
		require.ErrorIs(t, err, omnibox.ErrNilTx)
		_, err = bundle.inbox.AlreadyProcessed(ctx, nil, "c", "m")
		require.ErrorIs(t, err, omnibox.ErrNilDB)

		_, err = bundle.inbox.RecordOnceTx(ctx, tx, "c", "")
		require.ErrorIs(t, err, inbox.ErrEmptyMessageID)
		for name, args := range map[string][2]string{
			"EmptyConsumer":   {"", "m"},
			"LongConsumer":    {strings.Repeat("c", inbox.MaxConsumerLen+1), "m"},
			"NULConsumer":     {"c\x00", "m"},
			"LongMessageID":   {"c", strings.Repeat("m", inbox.MaxMessageIDLen+1)},
			"InvalidUTF8ID":   {"c", "m\xff"},
			"NULInMessageID":  {"c", "m\x00"},
			"InvalidConsumer": {"\xff", "m"},
		} {
			_, err := bundle.inbox.RecordOnceTx(ctx, tx, args[0], args[1])
			require.ErrorIs(t, err, inbox.ErrInvalid, name)
			err = bundle.inbox.RecordTx(ctx, tx, args[0], args[1])
			require.ErrorIs(t, err, inbox.ErrInvalid, name)
			_, err = bundle.inbox.AlreadyProcessed(ctx, tx, args[0], args[1])
			require.ErrorIs(t, err, inbox.ErrInvalid, name)
		}

		// The longest accepted names are stored and found.
		long := strings.Repeat("c", inbox.MaxConsumerLen)
		longID := strings.Repeat("m", inbox.MaxMessageIDLen)
		isNew, err := bundle.inbox.RecordOnceTx(ctx, tx, long, longID)
		require.NoError(t, err)
		require.True(t, isNew)
		done, err := bundle.inbox.AlreadyProcessed(ctx, tx, long, longID)
		require.NoError(t, err)
		require.True(t, done)
	})
}

// assertNoError reports err as a test error (usable off the test's
// goroutine) and returns whether it was nil.
func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}
