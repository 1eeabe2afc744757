package integration

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/mysql"
	"github.com/omnibox-go/omnibox/store/postgres"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// store is what the tests need of a dialect's store: writing, relaying,
// dead events, migrating and counting pending events.
type store interface {
	omnibox.Inserter
	omnibox.RelayStore
	omnibox.DeadLetterStore
	Migrate(ctx context.Context, db *sql.DB) error
	Pending(ctx context.Context, db omnibox.DBTX) (int64, error)
}

// dialect runs the end-to-end tests on one database (and driver).
type dialect struct {
	name string
	// driver is the database/sql driver name.
	driver string
	// open gives the test a fresh, empty database and the environment a
	// child relay process needs to open the same one (see openChild).
	open func(t *testing.T) (db *sql.DB, st store, ordersTable string, childEnv []string)
	// insertOrder inserts a business row (customer, amount) into %s.
	insertOrder string
	// createOrders creates the business table %s.
	createOrders string
}

var dialects = []dialect{
	{
		name:         "postgres",
		driver:       "postgres",
		open:         openPostgres("postgres"),
		createOrders: `CREATE TABLE %s (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL)`,
		insertOrder:  `INSERT INTO %s (customer, amount) VALUES ($1, $2)`,
	},
	{
		name:         "pgx",
		driver:       "pgx",
		open:         openPostgres("pgx"),
		createOrders: `CREATE TABLE %s (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL)`,
		insertOrder:  `INSERT INTO %s (customer, amount) VALUES ($1, $2)`,
	},
	{
		name:   "mysql",
		driver: "mysql",
		open: func(t *testing.T) (*sql.DB, store, string, []string) {
			db, database := dbtest.MySQL(t)
			st, err := mysql.New(&mysql.Config{})
			require.NoError(t, err)
			return db, st, "orders", []string{
				"OMNIBOX_CHILD_DIALECT=mysql",
				"OMNIBOX_CHILD_DSN=" + dbtest.MySQLConfig(t, database).FormatDSN(),
			}
		},
		createOrders: `CREATE TABLE %s (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(64) NOT NULL, amount INT NOT NULL)`,
		insertOrder:  `INSERT INTO %s (customer, amount) VALUES (?, ?)`,
	},
	{
		name:   "sqlite",
		driver: "sqlite",
		open: func(t *testing.T) (*sql.DB, store, string, []string) {
			db, path := dbtest.SQLite(t)
			// Eight writing goroutines and a relay: queue them in
			// database/sql, as docs/sqlite.md advises, rather than in
			// SQLite's unfair busy handler.
			db.SetMaxOpenConns(1)
			st, err := sqlite.New(&sqlite.Config{})
			require.NoError(t, err)
			return db, st, "orders", []string{"OMNIBOX_CHILD_DIALECT=sqlite", "OMNIBOX_CHILD_DSN=" + path}
		},
		createOrders: `CREATE TABLE %s (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT NOT NULL, amount INTEGER NOT NULL)`,
		insertOrder:  `INSERT INTO %s (customer, amount) VALUES (?, ?)`,
	},
}

func openPostgres(driver string) func(t *testing.T) (*sql.DB, store, string, []string) {
	return func(t *testing.T) (*sql.DB, store, string, []string) {
		db, schema := dbtest.Postgres(t, driver)
		st, err := postgres.New(&postgres.Config{Schema: schema})
		require.NoError(t, err)
		return db, st, schema + ".orders", []string{"OMNIBOX_CHILD_DIALECT=postgres", "OMNIBOX_CHILD_DSN=" + dbtest.PostgresURL(), "OMNIBOX_CHILD_SCHEMA=" + schema}
	}
}

// openChild opens, in the child relay process, the database and store the
// parent described with childEnv.
func openChild() (*sql.DB, store, error) {
	dsn := os.Getenv("OMNIBOX_CHILD_DSN")
	switch d := os.Getenv("OMNIBOX_CHILD_DIALECT"); d {
	case "postgres":
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			return nil, nil, err
		}
		st, err := postgres.New(&postgres.Config{Schema: os.Getenv("OMNIBOX_CHILD_SCHEMA")})
		return db, st, err
	case "mysql":
		if _, err := gomysql.ParseDSN(dsn); err != nil {
			return nil, nil, err
		}
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			return nil, nil, err
		}
		st, err := mysql.New(&mysql.Config{})
		return db, st, err
	case "sqlite":
		db, err := sqlite.Open(dsn)
		if err != nil {
			return nil, nil, err
		}
		db.SetMaxOpenConns(1)
		st, err := sqlite.New(&sqlite.Config{})
		return db, st, err
	default:
		return nil, nil, fmt.Errorf("unknown OMNIBOX_CHILD_DIALECT %q", d)
	}
}

// forEachDialect runs test as a parallel subtest per dialect.
func forEachDialect(t *testing.T, test func(t *testing.T, d dialect)) {
	t.Helper()
	forDialects(t, nil, test)
}

// forDialects runs test as a parallel subtest per dialect named in names
// (all of them when names is nil).
func forDialects(t *testing.T, names []string, test func(t *testing.T, d dialect)) {
	t.Helper()
	ran := 0
	for _, d := range dialects {
		if names != nil && !slices.Contains(names, d.name) {
			continue
		}
		ran++
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			test(t, d)
		})
	}
	if names != nil {
		require.Equal(t, len(names), ran, "unknown dialect in %v", names)
	}
}

// openAgain opens another handle on the environment's database, with a
// connection pool of its own. On PostgreSQL its connections carry
// application_name appName, so that they can be found in pg_stat_activity.
func (e *env) openAgain(t *testing.T, appName string) *sql.DB {
	t.Helper()
	dsn := e.childSetting(t, "OMNIBOX_CHILD_DSN")
	var (
		db  *sql.DB
		err error
	)
	switch e.dialect.driver {
	case "postgres", "pgx":
		u, perr := url.Parse(dsn)
		require.NoError(t, perr)
		q := u.Query()
		q.Set("application_name", appName)
		u.RawQuery = q.Encode()
		db, err = sql.Open(e.dialect.driver, u.String())
	case "sqlite":
		db, err = sqlite.Open(dsn)
	default:
		db, err = sql.Open(e.dialect.driver, dsn)
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// childSetting returns the value of the variable name in the environment a
// child relay process gets.
func (e *env) childSetting(t *testing.T, name string) string {
	t.Helper()
	for _, kv := range e.childEnv {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	t.Fatalf("no %s in the child environment", name)
	return ""
}
