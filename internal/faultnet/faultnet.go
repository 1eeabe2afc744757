// Package faultnet is a TCP proxy for tests that can freeze a link into a
// half-open state: its sockets stay open but stop answering, in both
// directions, with no FIN and no RST, as when a peer, a NAT entry or a
// firewall state disappears without a word. A client without deadlines
// waits on such a socket forever.
//
// Toxiproxy's toxics close a connection when they are removed, and cannot
// silence one established connection in both directions for good; this
// proxy can.
package faultnet

import (
	"net"
	"sync"
	"time"
)

// Proxy forwards the TCP connections it accepts to an upstream address. It
// is safe for concurrent use.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	closed bool
	conns  map[*pair]struct{}
	frozen bool

	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// pair is an accepted connection and, unless it was accepted while the
// proxy was frozen, its upstream connection.
type pair struct {
	client, server net.Conn
	dead           bool // frozen: nothing is forwarded any more; guarded by Proxy.mu
}

// Listen starts a proxy listening on addr (host:port; port 0 picks one) and
// forwarding to upstream. Close it when done.
func Listen(addr, upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[*pair]struct{}{}, done: make(chan struct{})}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr returns the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Freeze turns every open connection half-open for good: from now on the
// proxy forwards none of its bytes in either direction and never closes it
// (until [Proxy.Close]). Connections accepted while frozen are held the same
// way, without an upstream connection. Bytes a client sends to a frozen
// connection stay unread in the socket buffers.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
	past := time.Unix(1, 0)
	for c := range p.conns {
		c.dead = true
		// Kick both pumps out of Read and Write; they see dead and park.
		_ = c.client.SetDeadline(past)
		if c.server != nil {
			_ = c.server.SetDeadline(past)
		}
	}
}

// Thaw lets new connections through again. Connections frozen by
// [Proxy.Freeze] stay frozen: a half-open socket never comes back.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = false
}

// Frozen returns the number of connections held frozen.
func (p *Proxy) Frozen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if c.dead {
			n++
		}
	}
	return n
}

// Close stops listening and closes every connection, frozen or not, then
// waits for the proxy's goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	err := p.ln.Close()
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (c *pair) close() {
	_ = c.client.Close()
	if c.server != nil {
		_ = c.server.Close()
	}
}

// accept runs until the listener is closed.
func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(client) })
	}
}

// serve connects client upstream (unless the proxy is frozen) and pumps
// bytes both ways until either side closes or the pair is frozen.
func (p *Proxy) serve(client net.Conn) {
	c := &pair{client: client}
	if !p.add(c) {
		return
	}
	p.mu.Lock()
	frozen := c.dead
	p.mu.Unlock()
	if frozen {
		<-p.done
		return
	}
	server, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		p.remove(c)
		return
	}
	p.mu.Lock()
	switch {
	case p.closed:
		_ = server.Close()
	case c.dead: // frozen while dialling: hold the client, drop upstream
		_ = server.Close()
	default:
		c.server = server
	}
	p.mu.Unlock()
	if c.server == nil {
		<-p.done
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pump(c, client, server) })
	wg.Go(func() { p.pump(c, server, client) })
	wg.Wait()
}

// add registers c, dead if the proxy is frozen; it returns false (and
// closes c) when the proxy is closed.
func (p *Proxy) add(c *pair) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.client.Close()
		return false
	}
	c.dead = p.frozen
	p.conns[c] = struct{}{}
	return true
}

// remove closes c and forgets it.
func (p *Proxy) remove(c *pair) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.close()
	delete(p.conns, c)
}

// pump copies src to dst. When the pair is frozen it parks until Close;
// when either side fails otherwise it closes both, as a proxy does.
func (p *Proxy) pump(c *pair, src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.isDead(c) {
			<-p.done
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if p.isDead(c) {
				<-p.done
				return
			}
			p.remove(c)
			return
		}
	}
}

func (p *Proxy) isDead(c *pair) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return c.dead
}
