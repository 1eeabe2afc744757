package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// Insert writes events through store in one committed transaction on db,
// failing the test on error. For a dialect's own tests.
func Insert(t *testing.T, db *sql.DB, store omnibox.Inserter, events ...omnibox.Event) {
	t.Helper()
	inTx(t, db, func(tx *sql.Tx) {
		require.NoError(t, store.Insert(t.Context(), tx, omnibox.InsertParams{Events: events}))
	})
}

// NumberedEvents returns n complete events (ready for [omnibox.Inserter])
// with IDs event-<from> to event-<from+n-1>, topic "topic" and a one-byte
// payload, all created now.
func NumberedEvents(from, n int) []omnibox.Event {
	now := time.Now().Truncate(time.Microsecond).UTC()
	events := make([]omnibox.Event, n)
	for i := range events {
		events[i] = omnibox.Event{CreatedAt: now, ID: fmt.Sprintf("event-%d", from+i), Payload: []byte{byte(i)}, Topic: "topic"}
	}
	return events
}

// EventIDs returns the IDs of events, in order.
func EventIDs(events []omnibox.Event) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.ID
	}
	return out
}

// Claim runs one claim through store in its own transaction on db, commits
// it (as the relay does) and returns the claimed events, failing the test on
// error. It also fails the test when the result is nil, holds more than
// p.Limit events or is not in Seq order. For a dialect's own tests.
func Claim(t *testing.T, db *sql.DB, store omnibox.RelayStore, p omnibox.ClaimParams) []omnibox.ClaimedEvent {
	t.Helper()
	events, err := tryClaim(t.Context(), db, store, p)
	require.NoError(t, err)
	return events
}

// Complete runs one Complete through store in its own transaction on db,
// commits it and returns the result, failing the test on error. For a
// dialect's own tests.
func Complete(t *testing.T, db *sql.DB, store omnibox.RelayStore, p omnibox.CompleteParams) *omnibox.CompleteResult {
	t.Helper()
	res, err := tryComplete(t.Context(), db, store, p)
	require.NoError(t, err)
	return res
}

// KeyInPartition returns a key, named after name, whose events fall in
// partition part (see [omnibox.PartitionOf]). Different names give different
// keys.
func KeyInPartition(name string, part int) string {
	for i := 0; ; i++ {
		key := fmt.Sprintf("%s-%d", name, i)
		if omnibox.PartitionOf(&omnibox.Event{Key: key}) == part {
			return key
		}
	}
}

// Long enough never to expire during a test.
const longLease = time.Hour

// pollTimeout bounds the polls that wait for a short lease or delay to pass
// on the database's clock.
const pollTimeout = 15 * time.Second

// params returns claim parameters with a long lease, no owner prefix,
// BlockOnDead (as the relay claims) and, as Relay, owner up to its first
// "/": claims "a/1" and "a/2" are one relay's, "b/1" another's.
func params(owner string, limit int) omnibox.ClaimParams {
	relay, _, _ := strings.Cut(owner, "/")
	return omnibox.ClaimParams{BlockOnDead: true, Lease: longLease, Limit: limit, Owner: owner, Relay: relay}
}

// relayTxOptions returns the options the relay begins claim and complete
// transactions with for store ([omnibox.RelayTxOptioner]), nil by default.
func relayTxOptions(store omnibox.RelayStore) *sql.TxOptions {
	if o, ok := store.(omnibox.RelayTxOptioner); ok {
		return o.RelayTxOptions()
	}
	return nil
}

// claim runs one claim in its own transaction, committed, as the relay does.
func claim(t *testing.T, db *sql.DB, store omnibox.RelayStore, p omnibox.ClaimParams) []omnibox.ClaimedEvent {
	t.Helper()
	return Claim(t, db, store, p)
}

// tryClaim is claim for goroutines other than the test's: it returns the
// error instead of failing the test. It also checks the result: not nil, at
// most Limit events, in Seq order, none twice.
func tryClaim(ctx context.Context, db *sql.DB, store omnibox.RelayStore, p omnibox.ClaimParams) ([]omnibox.ClaimedEvent, error) {
	tx, err := db.BeginTx(ctx, relayTxOptions(store))
	if err != nil {
		return nil, fmt.Errorf("claim: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := store.Claim(ctx, tx, p)
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("claim: commit: %w", err)
	}
	if res == nil {
		return nil, errors.New("claim: nil result without error")
	}
	if len(res.Events) > p.Limit {
		return nil, fmt.Errorf("claim: %d events returned, more than Limit %d", len(res.Events), p.Limit)
	}
	for i := 1; i < len(res.Events); i++ {
		if res.Events[i].Seq <= res.Events[i-1].Seq {
			return nil, fmt.Errorf("claim: events not in seq order (or one twice): %d after %d", res.Events[i].Seq, res.Events[i-1].Seq)
		}
	}
	return res.Events, nil
}

// nonceParams is params with a nonce: the claim of a relay process.
func nonceParams(owner, nonce string) omnibox.ClaimParams {
	p := params(owner, 10)
	p.Nonce = nonce
	return p
}

// claimCommitted runs one claim in its own transaction and commits it even
// when Claim fails, so that the test sees what a failed claim left behind.
func claimCommitted(t *testing.T, db *sql.DB, store omnibox.RelayStore, p omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), relayTxOptions(store))
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	res, claimErr := store.Claim(t.Context(), tx, p)
	require.NoError(t, tx.Commit())
	return res, claimErr
}

// deadlineSlack is how long after its deadline a call may return.
const deadlineSlack = time.Second

// frozenTimeout bounds the wait for the server to end the session of a
// claim transaction left open past its deadline.
const frozenTimeout = 15 * time.Second

// beginHeld begins a claim transaction (without a deadline, so that
// database/sql does not roll it back when ctx ends: a relay cut off from
// the database could not either), claims with ctx and returns the events
// and the transaction, left open: a relay that froze before COMMIT. A
// cleanup rolls it back.
func beginHeld(t *testing.T, db *sql.DB, store omnibox.RelayStore, ctx context.Context, p omnibox.ClaimParams) ([]omnibox.ClaimedEvent, *sql.Tx) {
	t.Helper()
	tx, err := db.BeginTx(context.WithoutCancel(ctx), relayTxOptions(store))
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	res, err := store.Claim(ctx, tx, p)
	require.NoError(t, err)
	require.NotNil(t, res)
	return res.Events, tx
}

// complete runs one Complete in its own transaction, committed.
func complete(t *testing.T, db *sql.DB, store omnibox.RelayStore, p omnibox.CompleteParams) *omnibox.CompleteResult {
	t.Helper()
	return Complete(t, db, store, p)
}

// tryComplete is complete for goroutines other than the test's.
func tryComplete(ctx context.Context, db *sql.DB, store omnibox.RelayStore, p omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	tx, err := db.BeginTx(ctx, relayTxOptions(store))
	if err != nil {
		return nil, fmt.Errorf("complete: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := store.Complete(ctx, tx, p)
	if err != nil {
		return nil, fmt.Errorf("complete: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("complete: commit: %w", err)
	}
	if res == nil {
		return nil, errors.New("complete: nil result without error")
	}
	return res, nil
}

// deliver completes owner's claim with events delivered, and requires them
// all to be counted.
func deliver(t *testing.T, db *sql.DB, store omnibox.RelayStore, owner string, events []omnibox.ClaimedEvent) {
	t.Helper()
	res := complete(t, db, store, omnibox.CompleteParams{Delivered: seqs(events), Owner: owner})
	require.Equal(t, len(events), res.Delivered, "delivered events counted by Complete")
}

// drain claims as relay (with BlockOnDead) and delivers until a claim comes
// back empty, and returns the events in the order claimed.
func drain(t *testing.T, db *sql.DB, store omnibox.RelayStore, relay string, limit int) []omnibox.ClaimedEvent {
	t.Helper()
	var out []omnibox.ClaimedEvent
	for i := 0; ; i++ {
		require.Less(t, i, 10_000, "drain: claims never came back empty")
		owner := fmt.Sprintf("%s/drain-%d", relay, i)
		got := claim(t, db, store, params(owner, limit))
		if len(got) == 0 {
			return out
		}
		deliver(t, db, store, owner, got)
		out = append(out, got...)
	}
}

// pollClaim claims with p(i) for i = 0, 1, ... until a claim returns events,
// and returns them with the owner that claimed them. It fails the test after
// pollTimeout. Used to wait for a lease or a delay to pass on the database's
// clock without assuming anything about the local one.
func pollClaim(t *testing.T, db *sql.DB, store omnibox.RelayStore, p func(i int) omnibox.ClaimParams) ([]omnibox.ClaimedEvent, string) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for i := 0; ; i++ {
		params := p(i)
		if got := claim(t, db, store, params); len(got) > 0 {
			return got, params.Owner
		}
		require.True(t, time.Now().Before(deadline), "no event became claimable within %s", pollTimeout)
		time.Sleep(20 * time.Millisecond)
	}
}

// inTx runs fn in a transaction on db and commits it.
func inTx(t *testing.T, db *sql.DB, fn func(tx *sql.Tx)) {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	fn(tx)
	require.NoError(t, tx.Commit())
}

// write writes events through the outbox in one committed transaction.
func write(t *testing.T, db *sql.DB, outbox *omnibox.Outbox, events ...omnibox.Event) {
	t.Helper()
	inTx(t, db, func(tx *sql.Tx) {
		require.NoError(t, outbox.WriteTx(t.Context(), tx, events...))
	})
}

var eventCounter atomic.Int64

// newEvent returns a complete event (so it can go to Store.Insert directly)
// with a unique ID.
func newEvent(topic, key string) omnibox.Event {
	n := eventCounter.Add(1)
	return omnibox.Event{
		CreatedAt: time.Now().Truncate(time.Microsecond).UTC(),
		ID:        fmt.Sprintf("%s-%d", topic, n),
		Key:       key,
		Metadata:  map[string]string{"n": fmt.Sprint(n)},
		Payload:   fmt.Appendf(nil, `{"n":%d}`, n),
		Topic:     topic,
	}
}

func newEvents(topic, key string, n int) []omnibox.Event {
	events := make([]omnibox.Event, n)
	for i := range events {
		events[i] = newEvent(topic, key)
	}
	return events
}

// keylessIn returns a new event without a key whose ID puts it in partition
// part.
func keylessIn(topic string, part int) omnibox.Event {
	ev := newEvent(topic, "")
	base := ev.ID
	for i := 0; omnibox.PartitionOf(&ev) != part; i++ {
		ev.ID = fmt.Sprintf("%s.%d", base, i)
	}
	return ev
}

func requirePending(t *testing.T, db *sql.DB, store Store, want int64) {
	t.Helper()
	n, err := store.Pending(t.Context(), db)
	require.NoError(t, err)
	require.Equal(t, want, n, "pending events")
}

func requireIDs(t *testing.T, want []string, got []omnibox.ClaimedEvent) {
	t.Helper()
	require.Equal(t, want, claimedIDs(got), "claimed event IDs")
}

func claimedIDs(events []omnibox.ClaimedEvent) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.ID
	}
	return out
}

func ids(events ...omnibox.Event) []string { return EventIDs(events) }

func seqs(events []omnibox.ClaimedEvent) []int64 {
	out := make([]int64, len(events))
	for i, ev := range events {
		out[i] = ev.Seq
	}
	return out
}

func attempts(events []omnibox.ClaimedEvent) []int {
	out := make([]int, len(events))
	for i, ev := range events {
		out[i] = ev.Attempts
	}
	return out
}

// seqOf returns the seq of the claimed event with the given ID, failing the
// test when there is none.
func seqOf(t *testing.T, events []omnibox.ClaimedEvent, id string) int64 {
	t.Helper()
	for _, ev := range events {
		if ev.ID == id {
			return ev.Seq
		}
	}
	require.Failf(t, "event not claimed", "event %s is not among the claimed events %v", id, claimedIDs(events))
	return 0
}

// partitions returns the distinct partitions of events, in order of first
// appearance.
func partitions(events []omnibox.ClaimedEvent) []int {
	var out []int
	seen := make(map[int]bool)
	for _, ev := range events {
		p := omnibox.PartitionOf(&ev.Event)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
