package storetest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// tableCases checks table names (invalid ones refused, a custom table kept
// separate) and migrations (idempotent, safe to run concurrently).
func (s *suite) tableCases(t *testing.T) {
	t.Run("InvalidTableNamesRejected", func(t *testing.T) {
		t.Parallel()
		db := s.h.NewDB(t)
		// "" cannot be tried here: it asks NewStore for the default table.
		for _, name := range []string{" ", "Bad", "1x", "x;drop table y", "a-b", `x"y`, strings.Repeat("a", 100), "omnibox outbox", "naïve"} {
			store, err := s.h.NewStore(t, db, name)
			require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "table name %q", name)
			require.Nil(t, store, "table name %q", name)
			store, err = s.h.NewStoreWithRetention(t, db, name, time.Hour)
			require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "table name %q, with retention", name)
			require.Nil(t, store, "table name %q, with retention", name)
		}
	})

	t.Run("CustomTableIsSeparate", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		custom, err := s.h.NewStore(t, b.db, "custom_outbox_2")
		require.NoError(t, err)
		require.NoError(t, custom.Migrate(ctx, b.db))
		customOutbox, err := omnibox.New(custom, &omnibox.Config{})
		require.NoError(t, err)

		// One key, so one partition number, in both tables.
		inDefault, inCustom := newEvent("default", "same-key"), newEvent("custom", "same-key")
		write(t, b.db, b.outbox, inDefault)
		write(t, b.db, customOutbox, inCustom)

		// Leases and relays of one table do not count in the other.
		requireIDs(t, ids(inCustom), claim(t, b.db, custom, params("a/1", 10)))
		requireIDs(t, ids(inDefault), claim(t, b.db, b.store, params("b/1", 10)))
		requirePending(t, b.db, custom, 1)
		requirePending(t, b.db, b.store, 1)
	})

	t.Run("MigrateTwiceIsNoOp", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t) // migrated once
		ev := newEvent("migrate", "")
		write(t, b.db, b.outbox, ev)

		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		requirePending(t, b.db, b.store, 1)
		requireIDs(t, ids(ev), claim(t, b.db, b.store, params("a/1", 10)))
	})

	t.Run("MigrateConcurrently", func(t *testing.T) {
		t.Parallel()
		db := s.h.NewDB(t)
		store, err := s.h.NewStore(t, db, "")
		require.NoError(t, err)

		const n = 4
		var (
			errs  = make(chan error, n)
			start = make(chan struct{})
			wg    sync.WaitGroup
		)
		for range n {
			wg.Go(func() {
				<-start
				errs <- store.Migrate(t.Context(), db)
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}

		outbox, err := omnibox.New(store, &omnibox.Config{})
		require.NoError(t, err)
		ev := newEvent("migrated", "")
		write(t, db, outbox, ev)
		requireIDs(t, ids(ev), claim(t, db, store, params("a/1", 10)))
	})
}
