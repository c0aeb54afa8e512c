package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

// ClientSerialServer is a TLS server (not HTTP) on 127.0.0.1 serving leaf
// and requiring a client certificate from clientCAs. On each connection it
// writes "serial:<decimal serial of the client certificate>\n", then
// echoes what it reads, for 5 seconds at most. It returns its address.
func ClientSerialServer(t testing.TB, leaf *Leaf, clientCAs *CA) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{leaf.TLS()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs.Pool(),
	})
	return serve(t, ln, err, func(c net.Conn) {
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		fmt.Fprintf(tc, "serial:%s\n", tc.ConnectionState().PeerCertificates[0].SerialNumber)
		_, _ = io.Copy(tc, tc)
	})
}

// StalledServer accepts TCP connections on 127.0.0.1 and never answers:
// a backend whose TLS stack hangs, or a black hole behind a load
// balancer. It reads until the peer goes, and returns its address.
func StalledServer(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	return serve(t, ln, err, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

// serve runs handle on each connection ln accepts (and closes it after),
// until the test ends; it returns ln's address.
func serve(t testing.TB, ln net.Listener, err error, handle func(net.Conn)) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func init() {
	caddy.RegisterModule(SwappablePool{})
}

// SwappablePool is a trust pool source (tls.ca_pool.source.testpki_swappable)
// whose pool a test replaces with SetPool, standing in for a hot-reloaded
// truststore. JSON: {"provider": "testpki_swappable", "name": "<name>"}.
type SwappablePool struct {
	Name string `json:"name"`
}

var swappable sync.Map // name -> *atomic.Pointer[x509.CertPool]

// SetPool makes p the current pool of the SwappablePool called name.
func SetPool(name string, p *x509.CertPool) {
	v, _ := swappable.LoadOrStore(name, new(atomic.Pointer[x509.CertPool]))
	v.(*atomic.Pointer[x509.CertPool]).Store(p)
}

// CaddyModule returns the Caddy module information.
func (SwappablePool) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "tls.ca_pool.source.testpki_swappable", New: func() caddy.Module { return new(SwappablePool) }}
}

// CertPool returns the pool set last for this name (nil before any).
func (p SwappablePool) CertPool() *x509.CertPool {
	v, ok := swappable.Load(p.Name)
	if !ok {
		return nil
	}
	return v.(*atomic.Pointer[x509.CertPool]).Load()
}

var _ caddytls.CA = SwappablePool{}
