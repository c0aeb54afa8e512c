package passthrough

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	_ "github.com/mholt/caddy-l4/modules/l4proxy"
	_ "github.com/mholt/caddy-l4/modules/l4tls"
	"github.com/pires/go-proxyproto"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/trustline/trustline/internal/hellotest"
	"github.com/trustline/trustline/internal/testpki"
)

// The in-process bench: real TCP on 127.0.0.1, caddy-l4's own listener
// wrapper and routing, crypto/tls backends with certificates of their
// own, and a crypto/tls server standing in for Caddy's TLS termination
// behind the wrapper.

var (
	caOnce sync.Once
	theCA  *testpki.CA
)

// testCA is one CA for the whole test binary.
func testCA() *testpki.CA {
	caOnce.Do(func() {
		t := new(testing.T)
		theCA = testpki.NewCA(t, "passthrough test CA")
	})
	return theCA
}

// newTestContext returns a context and its cancel (which unloads the
// modules provisioned in it: their Cleanup runs), run at the latest when
// the test ends.
func newTestContext(t *testing.T) (caddy.Context, func()) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	once := sync.OnceFunc(cancel)
	t.Cleanup(once)
	return ctx, once
}

// backend is a TLS server that answers "backend:<name>" after the
// handshake (or echoes, when echo is set), with a certificate for name.
type backend struct {
	name     string
	addr     string
	echo     bool
	pp       bool // expects a PROXY protocol header
	headers  chan *proxyproto.Header
	accepted atomic.Int64
	open     atomic.Int64
	peerCN   chan string   // client certificate CN, with mTLS
	hold     chan struct{} // when set, connections stay open until closed
}

type backendOpt func(*backend)

func withEcho() backendOpt                { return func(b *backend) { b.echo = true } }
func withProxyProtocol() backendOpt       { return func(b *backend) { b.pp = true } }
func withHold(c chan struct{}) backendOpt { return func(b *backend) { b.hold = c } }

func startBackend(t *testing.T, name string, opts ...backendOpt) *backend {
	t.Helper()
	b := &backend{name: name, headers: make(chan *proxyproto.Header, 64), peerCN: make(chan string, 64)}
	for _, o := range opts {
		o(b)
	}
	leaf := testCA().Issue(t, testpki.CN(name), testpki.DNS(name))
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}, NextProtos: []string{"h2", "http/1.1", "postgresql"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			go b.serve(c, cfg)
		}
	}()
	return b
}

func (b *backend) serve(c net.Conn, cfg *tls.Config) {
	b.open.Add(1)
	defer b.open.Add(-1)
	defer c.Close()
	var conn net.Conn = c
	if b.pp {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			return
		}
		b.headers <- h
		conn = &bufConn{Conn: c, r: br}
	}
	tc := tls.Server(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		b.peerCN <- certs[0].Subject.CommonName
	}
	if b.echo {
		_, _ = io.Copy(tc, tc)
		return
	}
	_, _ = tc.Write([]byte("backend:" + b.name))
	if b.hold != nil {
		<-b.hold
	}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// front is caddy-l4's listener wrapper on a real listener, with a TLS
// server ("caddy") taking what falls through.
type front struct {
	addr        string
	fellThrough atomic.Int64
	caddyCert   *testpki.Leaf
	// unload cancels the config: the modules' Cleanup runs, as on an
	// admin reload; the listener stays open.
	unload func()
	ctx    caddy.Context
}

// startFront provisions routes (a caddy-l4 listener wrapper JSON object)
// and serves them on a loopback port.
func startFront(t *testing.T, wrapperJSON string) *front {
	t.Helper()
	ctx, unload := newTestContext(t)
	var lw layer4.ListenerWrapper
	if err := json.Unmarshal([]byte(wrapperJSON), &lw); err != nil {
		t.Fatalf("wrapper JSON: %v\n%s", err, wrapperJSON)
	}
	if err := lw.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{addr: ln.Addr().String(), unload: unload, ctx: ctx}
	f.caddyCert = testCA().Issue(t, testpki.CN("caddy"), testpki.DNS("caddy.example.com"))
	wrapped := lw.WrapListener(ln)
	t.Cleanup(func() { wrapped.Close() })
	tlsLn := tls.NewListener(wrapped, &tls.Config{Certificates: []tls.Certificate{f.caddyCert.TLS()}})
	go func() {
		for {
			c, err := tlsLn.Accept()
			if err != nil {
				return
			}
			f.fellThrough.Add(1)
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				_, _ = c.Write([]byte("caddy"))
			}()
		}
	}()
	return f
}

// blockWrapper parses a passthrough block (Caddyfile syntax) into the
// listener wrapper JSON the directive generates. With standalone set, the
// default route is the standalone one (no served_by_caddy, which needs
// Caddy's tls app).
func blockWrapper(t *testing.T, block string, standalone bool) string {
	t.Helper()
	d := caddyfile.NewTestDispenser(block)
	b, err := ParseBlock(d, false)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	routes, err := b.Layer4Routes(!standalone)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(&layer4.ListenerWrapper{Routes: routes, MatchingTimeout: b.MatchingTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// shape controls how the client's first flight goes on the wire.
type shape struct {
	recordSize int           // reframe the ClientHello into records of this size
	segment    int           // write it in TCP segments of this size
	pause      time.Duration // between segments
}

type shapingConn struct {
	net.Conn
	s    shape
	done bool
}

func (c *shapingConn) Write(p []byte) (int, error) {
	if c.done {
		return c.Conn.Write(p)
	}
	c.done = true
	data := p
	if c.s.recordSize > 0 {
		data = hellotest.Reframe(p, c.s.recordSize)
	}
	seg := c.s.segment
	if seg <= 0 {
		seg = len(data)
	}
	for len(data) > 0 {
		n := min(seg, len(data))
		if _, err := c.Conn.Write(data[:n]); err != nil {
			return 0, err
		}
		data = data[n:]
		if len(data) > 0 && c.s.pause > 0 {
			time.Sleep(c.s.pause)
		}
	}
	return len(p), nil
}

// fetch connects through the front with serverName and returns what the
// server that completed the handshake said ("backend:<name>" or
// "caddy") and the CN of the certificate it presented.
func fetch(t *testing.T, addr, serverName string, s shape, cfg *tls.Config) (string, string, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", "", err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if cfg == nil {
		cfg = new(tls.Config)
	}
	cfg = cfg.Clone()
	cfg.ServerName = serverName
	cfg.RootCAs = testCA().Pool()
	if serverName == "" {
		cfg.InsecureSkipVerify = true
	}
	cfg.VerifyConnection = nil
	tc := tls.Client(&shapingConn{Conn: raw, s: s}, cfg)
	if err := tc.Handshake(); err != nil {
		return "", "", err
	}
	cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	body, err := io.ReadAll(tc)
	if err != nil && !errors.Is(err, io.EOF) {
		return string(body), cn, err
	}
	return string(body), cn, nil
}

// hangingAddr returns an address whose accept queue is full, so a dial
// to it hangs until the dialer gives up.
func hangingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	var fillers []net.Conn
	t.Cleanup(func() {
		for _, c := range fillers {
			c.Close()
		}
	})
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full now
		}
		fillers = append(fillers, c)
	}
	t.Skip("could not fill a listen queue on this kernel")
	return ""
}

// observe replaces the loggers of every passthrough module provisioned
// after the call with an observer, and returns the observed logs.
func observeLogs(t *testing.T) *observer.ObservedLogs {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	prev := testLogger
	testLogger = zap.New(core)
	t.Cleanup(func() { testLogger = prev })
	return logs
}

func logsWith(logs *observer.ObservedLogs, msg string) []map[string]any {
	var out []map[string]any
	for _, e := range logs.FilterMessage(msg).All() {
		out = append(out, e.ContextMap())
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
