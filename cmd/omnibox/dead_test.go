package main

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

func TestDeadCommand(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "dead.db")
	db, err := sqlite.Open(path)
	require.NoError(t, err)
	defer db.Close()
	store, err := sqlite.New(&sqlite.Config{})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx, db))
	ob, err := omnibox.New(store, &omnibox.Config{})
	require.NoError(t, err)
	require.NoError(t, ob.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return ob.WriteTx(ctx, tx,
			omnibox.Event{ID: "a", Topic: "orders", Key: "k1", Payload: []byte("1")},
			omnibox.Event{ID: "b", Topic: "orders", Key: "k2", Payload: []byte("2")},
			omnibox.Event{ID: "c", Topic: "orders", Key: "k3", Payload: []byte("3")})
	}))
	// A relay gave up on a and b.
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	claimed, err := store.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "r/1"})
	require.NoError(t, err)
	require.Len(t, claimed.Events, 3)
	seq := map[string]int64{}
	for _, ev := range claimed.Events {
		seq[ev.ID] = ev.Seq
	}
	_, err = store.Complete(ctx, tx, omnibox.CompleteParams{
		Owner:     "r/1",
		Dead:      []omnibox.FailedEvent{{Seq: seq["a"], Error: "rejected: too large"}, {Seq: seq["b"], Error: "rejected"}},
		Delivered: []int64{seq["c"]},
	})
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	dead := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append([]string{"dead", "-dsn", "sqlite:" + path}, args...), &out, &errOut)
		return out.String(), err
	}
	out, err := dead("list")
	require.NoError(t, err)
	require.Contains(t, out, "rejected: too large")
	require.Contains(t, out, "2 dead event(s)")

	out, err = dead("requeue", strconv.FormatInt(seq["a"], 10), strconv.FormatInt(seq["c"], 10))
	require.NoError(t, err)
	require.Contains(t, out, "requeued 1 of 2")
	out, err = dead("discard", strconv.FormatInt(seq["b"], 10))
	require.NoError(t, err)
	require.Contains(t, out, "discarded 1 of 1")
	out, err = dead("list")
	require.NoError(t, err)
	require.Contains(t, out, "0 dead event(s)")
	n, err := store.Pending(ctx, db)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "a is pending again")

	for _, bad := range [][]string{{"requeue"}, {"requeue", "x"}, {"requeue", "-3"}, {"frobnicate"}, {}} {
		_, err := dead(bad...)
		require.Error(t, err, "%q", bad)
	}
	var errOut bytes.Buffer
	require.ErrorContains(t, run(ctx, []string{"dead", "list"}, &bytes.Buffer{}, &errOut), "-dsn is required")
	require.ErrorContains(t, run(ctx, []string{"dead", "-dsn", "redis://x", "list"}, &bytes.Buffer{}, &errOut), "want postgres://")
}
