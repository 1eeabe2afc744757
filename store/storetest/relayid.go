package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// relayIDCases checks that a relay ID has one live process at a time: a
// claim with another nonce is refused while the record is live, Restart
// replaces it, an expired record frees the ID, and an empty nonce skips the
// check.
func (s *suite) relayIDCases(t *testing.T) {
	t.Run("RelayIDInUseByAnotherProcess", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		require.Empty(t, claim(t, b.db, b.store, nonceParams("twin-relay/1", "nonce-1")))
		events := newEvents("twin", KeyInPartition("twin", 3), 2)
		write(t, b.db, b.outbox, events...)

		// A second process with the same relay ID and another nonce, while
		// the first is live: an error naming the relay ID. Its transaction
		// is committed all the same, to show that it claimed and recorded
		// nothing: the first process goes on undisturbed, and gets the
		// events.
		_, err := claimCommitted(t, b.db, b.store, nonceParams("twin-relay/2", "nonce-2"))
		require.ErrorIs(t, err, omnibox.ErrRelayIDInUse)
		require.ErrorContains(t, err, "twin-relay")
		requireIDs(t, ids(events...), claim(t, b.db, b.store, nonceParams("twin-relay/3", "nonce-1")))
	})

	t.Run("RelayIDRestartReplacesTheRecord", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		require.Empty(t, claim(t, b.db, b.store, nonceParams("restart/1", "nonce-1")))
		events := newEvents("restart", KeyInPartition("restart", 4), 2)
		write(t, b.db, b.outbox, events...)

		// The first claim of a new run replaces the live record of its
		// predecessor, and claims.
		restart := nonceParams("restart/2", "nonce-2")
		restart.Restart = true
		requireIDs(t, ids(events...), claim(t, b.db, b.store, restart))
		require.Empty(t, claim(t, b.db, b.store, nonceParams("restart/3", "nonce-2")))

		// Had the predecessor been a live twin, its next claim fails.
		_, err := tryClaim(t.Context(), b.db, b.store, nonceParams("restart/4", "nonce-1"))
		require.ErrorIs(t, err, omnibox.ErrRelayIDInUse)
	})

	t.Run("RelayIDFreeOnceItsRecordExpired", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		first := nonceParams("expiring/1", "nonce-1")
		first.Lease = 50 * time.Millisecond
		require.Empty(t, claim(t, b.db, b.store, first))

		// Until the record expires on the database's clock the ID is in
		// use; then another process takes it without Restart.
		deadline := time.Now().Add(pollTimeout)
		for i := 0; ; i++ {
			_, err := tryClaim(t.Context(), b.db, b.store, nonceParams(fmt.Sprintf("expiring/2-%d", i), "nonce-2"))
			if err == nil {
				break
			}
			require.ErrorIs(t, err, omnibox.ErrRelayIDInUse)
			require.True(t, time.Now().Before(deadline), "a relay ID recorded for 50ms still in use after %s", pollTimeout)
			time.Sleep(20 * time.Millisecond)
		}
		_, err := tryClaim(t.Context(), b.db, b.store, nonceParams("expiring/3", "nonce-1"))
		require.ErrorIs(t, err, omnibox.ErrRelayIDInUse, "the new process's record is live")
	})

	t.Run("RelayIDEmptyNonceSkipsTheCheck", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		require.Empty(t, claim(t, b.db, b.store, nonceParams("empty/1", "nonce-1")))
		require.Empty(t, claim(t, b.db, b.store, nonceParams("empty/2", "")), "a claim without a nonce checked it")
		require.Empty(t, claim(t, b.db, b.store, nonceParams("empty/3", "nonce-1")), "a record without a nonce conflicted")
	})
}
