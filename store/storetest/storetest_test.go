package storetest_test

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
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
	schema string
}

func (s *brokenStore) Insert(ctx context.Context, tx omnibox.DBTX, p omnibox.InsertParams) error {
	if s.defect == "insert-outside-tx" {
		// Writes through the pool, not the caller's transaction: visible
		// before commit and not undone by a rollback.
		return s.Store.Insert(ctx, s.db, p)
	}
	return s.Store.Insert(ctx, tx, p)
}

func (s *brokenStore) Claim(ctx context.Context, tx omnibox.DBTX, p omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	if s.defect == "ignore-leases" {
		// Forgets every lease before claiming: a live lease no longer blocks.
		if _, err := tx.ExecContext(ctx, `UPDATE `+s.schema+`.omnibox_outbox SET claimed_until = NULL`); err != nil {
			return nil, err
		}
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
	}
	return res, nil
}

// TestBrokenStoreSuite runs the suite against a broken store. It only does
// so as the subprocess of TestSuiteCatchesBrokenStore, which expects it to
// fail.
func TestBrokenStoreSuite(t *testing.T) {
	defect := os.Getenv(brokenEnv)
	if defect == "" {
		t.Skip("runs only as a subprocess of TestSuiteCatchesBrokenStore")
	}
	var schemas sync.Map
	storetest.Run(t, storetest.Harness{
		LastError: func(t *testing.T, db *sql.DB, table string, seq int64) string {
			schema, _ := schemas.Load(db)
			var last sql.NullString
			require.NoError(t, db.QueryRow(`SELECT last_error FROM `+schema.(string)+`.`+table+` WHERE seq = $1`, seq).Scan(&last))
			return last.String
		},
		NewDB: func(t *testing.T) *sql.DB {
			db, schema := dbtest.Postgres(t, "postgres")
			schemas.Store(db, schema)
			return db
		},
		NewStore: func(t *testing.T, db *sql.DB, table string) (storetest.Store, error) {
			schema, _ := schemas.Load(db)
			s, err := postgres.New(&postgres.Config{Schema: schema.(string), Table: table})
			if err != nil {
				return nil, err
			}
			return &brokenStore{Store: s, db: db, defect: defect, schema: schema.(string)}, nil
		},
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
		"claim-twice":       {"ClaimOldestFirstInInsertOrderUpToLimit", "ConcurrentClaimersNeverShareAnEvent"},
		"insert-outside-tx": {"EventVisibleOnlyAfterCommit", "RolledBackEventNeverClaimed"},
		"ignore-leases":     {"LiveLeaseAtHeadBlocksOtherOwners"},
		"lossy-metadata":    {"RoundTripIsExact"},
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
