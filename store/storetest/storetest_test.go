package storetest_test

import (
	"cmp"
	"context"
	"database/sql"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/internal/seqlist"
	"github.com/omnibox-go/omnibox/store/postgres"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// brokenEnv selects, in the subprocess, which defect the broken store has.
const brokenEnv = "OMNIBOX_STORETEST_BROKEN"

// brokenStore is the PostgreSQL store with one deliberate defect.
type brokenStore struct {
	*postgres.Store
	db     *sql.DB
	defect string
	table  string // qualified and quoted outbox table
}

func (s *brokenStore) Insert(ctx context.Context, tx omnibox.DBTX, p omnibox.InsertParams) error {
	if s.defect == "insert-outside-tx" {
		// Writes through the pool, not the caller's transaction: visible
		// before commit and not undone by a rollback.
		return s.Store.Insert(ctx, s.db, p)
	}
	return s.Store.Insert(ctx, tx, p)
}

// waitingPrefix hides the key of waiting events during a claim.
const waitingPrefix = "#waiting#"

func (s *brokenStore) Claim(ctx context.Context, tx omnibox.DBTX, p omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	switch s.defect {
	case "ignore-leases":
		// Forgets every partition lease before claiming.
		if _, err := tx.ExecContext(ctx, `UPDATE `+s.partsTable()+` SET claimed_by = NULL, claimed_until = NULL`); err != nil {
			return nil, err
		}
	case "waiting-key-passes":
		// Hides the keys of waiting events from the claim: they no longer
		// block their key.
		if _, err := tx.ExecContext(ctx, `UPDATE `+s.table+` SET event_key = $1 || event_key WHERE state = 1 AND event_key <> ''`, waitingPrefix); err != nil {
			return nil, err
		}
		defer func() {
			_, _ = tx.ExecContext(ctx, `UPDATE `+s.table+` SET event_key = substr(event_key, $2) WHERE starts_with(event_key, $1)`, waitingPrefix, len(waitingPrefix)+1)
		}()
	case "dead-never-blocks":
		p.BlockOnDead = false
	case "ignore-nonce":
		// Never checks whether another live process uses the relay ID.
		p.Nonce = ""
		p.Restart = false
	case "one-relay":
		// Every claim says it is the same relay: none shares partitions.
		p.Relay = "one-relay"
	}
	res, err := s.Store.Claim(ctx, tx, p)
	if err != nil || res == nil {
		return res, err
	}
	switch s.defect {
	case "claim-twice":
		// Returns the first claimed event a second time.
		if len(res.Events) > 0 {
			res.Events = append(res.Events, res.Events[0])
		}
	case "lossy-metadata":
		for i := range res.Events {
			for k, v := range res.Events[i].Metadata {
				res.Events[i].Metadata[k] = v + " "
			}
		}
	case "waiting-key-passes":
		for i := range res.Events {
			res.Events[i].Key = strings.TrimPrefix(res.Events[i].Key, waitingPrefix)
		}
	}
	return res, nil
}

func (s *brokenStore) Complete(ctx context.Context, tx omnibox.DBTX, p omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	switch s.defect {
	case "complete-ignores-lease":
		// Takes back the partitions of the events it completes, leased to
		// another claim or not, as if it still held them.
		if _, err := tx.ExecContext(ctx, `UPDATE `+s.partsTable()+` p SET claimed_by = $1, claimed_seqs = g.seqs
			FROM (SELECT part, array_agg(seq) AS seqs FROM `+s.table+` WHERE seq = ANY ($2::bigint[]) GROUP BY part) g
			WHERE p.part = g.part`, p.Owner, seqlist.Join("{", append(slices.Clone(p.Delivered), p.Released...), "}")); err != nil {
			return nil, err
		}
	case "release-counts-attempt":
		// Releases as a retry without delay: counts an attempt.
		for _, seq := range p.Released {
			p.Retry = append(p.Retry, omnibox.FailedEvent{Error: p.ReleaseError, Seq: seq})
		}
		p.Released = nil
	}
	res, err := s.Store.Complete(ctx, tx, p)
	if err != nil {
		return nil, err
	}
	if s.defect == "complete-frees-all" {
		// Frees every partition, not only the owner's.
		if _, err := tx.ExecContext(ctx, `UPDATE `+s.partsTable()+` SET claimed_by = NULL, claimed_until = NULL`); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (s *brokenStore) Purge(ctx context.Context, db omnibox.DBTX, limit int) (int, error) {
	if s.defect == "purge-ignores-limit" && limit > 0 {
		limit = 1 << 20
	}
	return s.Store.Purge(ctx, db, limit)
}

func (s *brokenStore) partsTable() string { return strings.TrimSuffix(s.table, `"`) + `_parts"` }

// TestBrokenStoreSuite runs the suite against a broken store. It only does
// so as the subprocess of TestSuiteCatchesBrokenStore, which expects it to
// fail.
func TestBrokenStoreSuite(t *testing.T) {
	defect := os.Getenv(brokenEnv)
	if defect == "" {
		t.Skip("runs only as a subprocess of TestSuiteCatchesBrokenStore")
	}
	var schemas sync.Map // *sql.DB -> schema
	qualified := func(db *sql.DB, table string) string {
		schema, _ := schemas.Load(db)
		return `"` + schema.(string) + `"."` + cmp.Or(table, postgres.DefaultTable) + `"`
	}
	newStore := func(t *testing.T, db *sql.DB, table string, retention time.Duration) (storetest.Store, error) {
		schema, _ := schemas.Load(db)
		s, err := postgres.New(&postgres.Config{Retention: retention, Schema: schema.(string), Table: table})
		if err != nil {
			return nil, err
		}
		return &brokenStore{Store: s, db: db, defect: defect, table: qualified(db, table)}, nil
	}
	storetest.Run(t, storetest.Harness{
		BackdateDelivered: func(t *testing.T, db *sql.DB, table string, seq int64, age time.Duration) bool {
			r, err := db.Exec(`UPDATE `+qualified(db, table)+` SET delivered_at = now() - $2::bigint * interval '1 microsecond'
				WHERE seq = $1 AND state = 3`, seq, age.Microseconds())
			require.NoError(t, err)
			n, err := r.RowsAffected()
			require.NoError(t, err)
			return n == 1
		},
		LastError: func(t *testing.T, db *sql.DB, table string, seq int64) string {
			var last sql.NullString
			require.NoError(t, db.QueryRow(`SELECT last_error FROM `+qualified(db, table)+` WHERE seq = $1`, seq).Scan(&last))
			return last.String
		},
		NewDB: func(t *testing.T) *sql.DB {
			db, schema := dbtest.Postgres(t, "postgres")
			schemas.Store(db, schema)
			return db
		},
		NewStore: func(t *testing.T, db *sql.DB, table string) (storetest.Store, error) {
			return newStore(t, db, table, 0)
		},
		NewStoreWithRetention: newStore,
	}, storetest.Features{})
}

// TestSuiteCatchesBrokenStore shows that the conformance suite is not a
// rubber stamp: each deliberately broken store fails it, in the case that
// checks the broken property.
func TestSuiteCatchesBrokenStore(t *testing.T) {
	t.Parallel()
	// Each defect, and the cases of the suite that must catch it. Only those
	// cases run, to keep this quick.
	cases := map[string][]string{
		"claim-twice":            {"ClaimInInsertOrderWithinPartitionUpToLimit", "ConcurrentRelaysNeverShareAnEventAndKeepKeyOrder"},
		"complete-frees-all":     {"PartitionLeaseBlocksOtherOwners"},
		"complete-ignores-lease": {"ExpiredLeaseClaimedAgain"},
		"dead-never-blocks":      {"DeadEventBlocksItsKeyWithBlockOnDead"},
		"ignore-leases":          {"PartitionLeaseBlocksOtherOwners"},
		"ignore-nonce":           {"RelayIDInUseByAnotherProcess", "RelayIDRestartReplacesTheRecord"},
		"insert-outside-tx":      {"EventVisibleOnlyAfterCommit", "RolledBackEventNeverClaimed"},
		"lossy-metadata":         {"RoundTripIsExact"},
		"one-relay":              {"LiveRelaysSharePartitions"},
		"purge-ignores-limit":    {"PurgeDeletesOnlyExpiredOldestFirstInBatches"},
		"release-counts-attempt": {"ReleasedClaimableAtOnceWithError"},
		"waiting-key-passes":     {"RetryWaitsAndBlocksOnlyItsKey", "RetryClaimedFirstAfterDelay"},
	}
	exe, err := os.Executable()
	require.NoError(t, err)
	for defect, failCases := range cases {
		t.Run(defect, func(t *testing.T) {
			t.Parallel()
			run := "^TestBrokenStoreSuite$/^(" + strings.Join(failCases, "|") + ")$"
			cmd := exec.Command(exe, "-test.run="+run, "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+defect)
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "the suite passed a store with defect %q:\n%s", defect, out)
			for _, c := range failCases {
				require.Contains(t, string(out), "--- FAIL: TestBrokenStoreSuite/"+c,
					"defect %q was not caught by case %s:\n%s", defect, c, out)
			}
		})
	}
}
