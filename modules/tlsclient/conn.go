package tlsclient

import (
	"net"
	"sync"
	"sync/atomic"
)

// trackedConn is the connection under a backend's TLS. When it is closed
// it keeps what the peer had sent and nobody had read yet (a TLS 1.3
// server's alert refusing our certificate, when the user of the
// connection was writing when it came), so that Refusal can let
// crypto/tls decrypt it afterwards.
type trackedConn struct {
	net.Conn
	closed atomic.Bool
	mu     sync.Mutex
	rest   []byte
}

func (c *trackedConn) Close() error {
	if !c.closed.Swap(true) {
		if rest := pending(c.Conn); len(rest) > 0 {
			c.mu.Lock()
			c.rest = rest
			c.mu.Unlock()
		}
	}
	return c.Conn.Close()
}

// NetConn is the connection under, as tls.Conn's NetConn is (go-redis
// looks through both for the socket, to peek at it).
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

func (c *trackedConn) Read(p []byte) (int, error) {
	if !c.closed.Load() {
		return c.Conn.Read(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rest) == 0 {
		return 0, net.ErrClosed
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}
