package publisher

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// Dialer returns the dial function of [DefaultKafkaOptions], for
// kgo.Dialer: it dials TCP with a 10 s timeout and 30 s keep-alives, sets
// SO_LINGER to 0 on the connection, and, when tlsConfig is not nil, runs a
// TLS client on it (tlsConfig is cloned per dial, with ServerName set from
// the broker's host when empty).
//
// SO_LINGER 0 makes Close reset the connection (TCP RST) and discard
// whatever the kernel has not yet sent, instead of sending it in the
// background for minutes. franz-go closes a connection when it gives up on
// a request: a read or write deadline passed, or the Publish deadline
// cancelled an in-flight produce request (kgo.AllowIdempotentProduceCancellation).
// By then [Kafka.Publish] reports the request's records as failed and the
// relay may publish them again; with a graceful close, the kernel would
// keep retransmitting the abandoned request and, once a half-open link
// heals, the broker could write it after the records that followed. The
// reset makes the abandoned bytes that never left the machine go away with
// the connection. (A graceful close has nothing to flush here: franz-go
// closes only connections it is done with.)
func Dialer(tlsConfig *tls.Config) func(ctx context.Context, network, host string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, host)
		if err != nil {
			return nil, err
		}
		if tcp, ok := conn.(*net.TCPConn); ok {
			if err := tcp.SetLinger(0); err != nil {
				_ = conn.Close()
				return nil, fmt.Errorf("publisher: setting SO_LINGER on the connection to %s: %w", host, err)
			}
		}
		if tlsConfig == nil {
			return conn, nil
		}
		config := tlsConfig.Clone()
		if config.ServerName == "" {
			h, _, err := net.SplitHostPort(host)
			if err != nil {
				_ = conn.Close()
				return nil, fmt.Errorf("publisher: broker address %q: %w", host, err)
			}
			config.ServerName = h
		}
		tc := tls.Client(conn, config)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	}
}
