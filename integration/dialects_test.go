package integration

import (
	"database/sql"
	"fmt"
	"os"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/mysql"
	"github.com/omnibox-go/omnibox/store/postgres"
	"github.com/omnibox-go/omnibox/store/sqlite"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// store is what the tests need of a dialect's store: what the conformance
// suite needs too.
type store = storetest.Store

// dialect runs the end-to-end tests on one database (and driver).
type dialect struct {
	name string
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
		open:         openPostgres("postgres"),
		createOrders: `CREATE TABLE %s (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL)`,
		insertOrder:  `INSERT INTO %s (customer, amount) VALUES ($1, $2)`,
	},
	{
		name:         "pgx",
		open:         openPostgres("pgx"),
		createOrders: `CREATE TABLE %s (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL)`,
		insertOrder:  `INSERT INTO %s (customer, amount) VALUES ($1, $2)`,
	},
	{
		name: "mysql",
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
		name: "sqlite",
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
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			test(t, d)
		})
	}
}
