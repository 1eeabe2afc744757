package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
)

// snippet-start: dialer
// relayDialer is the net.Dialer of the relay's own connection pool: TCP
// keepalives that notice a peer gone silent on an idle connection within
// about 25 s (10 s idle, then 3 probes 5 s apart) instead of Go's default of
// about 2.5 minutes. The relay's deadlines (RelayConfig.DatabaseTimeout) and
// the store's server-side guards bound calls in flight; keepalives clean up
// pooled connections whose peer vanished.
var relayDialer = &net.Dialer{
	Timeout: 5 * time.Second,
	KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3,
	},
}

// pqDialer adapts relayDialer to lib/pq's Dialer interface.
type pqDialer struct{ *net.Dialer }

func (d pqDialer) Dial(network, address string) (net.Conn, error) {
	return d.Dialer.Dial(network, address)
}

func (d pqDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// snippet-end: dialer

// A relay's own pool, with TCP keepalives set, on lib/pq and on pgx.
func Example_relayPool() {
	dsn := "postgres://app@127.0.0.1:5432/test?sslmode=disable&connect_timeout=5"

	// snippet-start: relay-pool
	// lib/pq: a connector with a dialer of your own.
	connector, err := pq.NewConnector(dsn)
	if err != nil {
		fmt.Println(err)
		return
	}
	connector.Dialer(pqDialer{relayDialer})
	pqDB := sql.OpenDB(connector)
	defer pqDB.Close()

	// pgx: the dial function of the parsed config.
	config, err := pgx.ParseConfig(dsn)
	if err != nil {
		fmt.Println(err)
		return
	}
	config.DialFunc = relayDialer.DialContext
	pgxDB := stdlib.OpenDB(*config)
	defer pgxDB.Close()
	// snippet-end: relay-pool

	// A couple of connections per relay lane are plenty.
	pqDB.SetMaxOpenConns(4)
	pgxDB.SetMaxOpenConns(4)
	fmt.Println("ready")
	// Output: ready
}
