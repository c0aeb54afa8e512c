package passthrough

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestRoutesByName routes exact, wildcard and ALPN-restricted names and
// lets the rest fall through to the TLS server behind the wrapper.
func TestRoutesByName(t *testing.T) {
	db := startBackend(t, "db.example.com")
	pg := startBackend(t, "db.example.com")
	wild := startBackend(t, "x.tenant.example.com")
	api := startBackend(t, "api.tenant.example.com")
	f := startFront(t, blockWrapper(t, fmt.Sprintf(`passthrough {
		db.example.com %s
		db.example.com %s {
			alpn postgresql
		}
		*.tenant.example.com %s
		api.tenant.example.com %s
	}`, db.addr, pg.addr, wild.addr, api.addr), false))

	for _, tc := range []struct {
		name, sni string
		alpn      []string
		want      *backend
	}{
		{"exact", "db.example.com", nil, db},
		{"exact, other case", "DB.Example.COM", nil, db},
		{"exact by ALPN", "db.example.com", []string{"postgresql"}, pg},
		{"exact, ALPN not listed", "db.example.com", []string{"h2"}, db},
		{"wildcard", "x.tenant.example.com", nil, wild},
		{"exact beats wildcard", "api.tenant.example.com", nil, api},
		{"wildcard covers one label only", "a.b.tenant.example.com", nil, nil},
		{"unknown name falls through", "caddy.example.com", nil, nil},
		{"no SNI falls through", "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := []int64{db.accepted.Load(), pg.accepted.Load(), wild.accepted.Load(), api.accepted.Load()}
			sni := tc.sni
			if tc.want == wild {
				sni = "x.tenant.example.com"
			}
			body, cn, err := fetch(t, f.addr, sni, shape{}, &tls.Config{NextProtos: tc.alpn, InsecureSkipVerify: tc.want == nil || tc.name == "exact, other case"})
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if tc.want == nil {
				if body != "caddy" || cn != "caddy" {
					t.Fatalf("got %q from %q, want the fall-through server", body, cn)
				}
				return
			}
			if body != "backend:"+tc.want.name {
				t.Fatalf("got %q (cert %q), want backend %s", body, cn, tc.want.name)
			}
			after := []int64{db.accepted.Load(), pg.accepted.Load(), wild.accepted.Load(), api.accepted.Load()}
			for i, b := range []*backend{db, pg, wild, api} {
				want := before[i]
				if b == tc.want {
					want++
				}
				if after[i] != want {
					t.Fatalf("backend %d accepted %d connections, want %d", i, after[i], want)
				}
			}
		})
	}
}

// plainWrapper is the hand-written caddy-l4 config for the same routes:
// its `tls` matcher and `proxy` handler.
func plainWrapper(sni, upstream, catchAll string) string {
	routes := []string{fmt.Sprintf(`{"match":[{"tls":{"sni":[%q]}}],"handle":[{"handler":"proxy","upstreams":[{"dial":[%q]}]}]}`, sni, upstream)}
	if catchAll != "" {
		routes = append(routes, fmt.Sprintf(`{"handle":[{"handler":"proxy","upstreams":[{"dial":[%q]}]}]}`, catchAll))
	}
	return `{"routes":[` + strings.Join(routes, ",") + `]}`
}

// suiteWrapper is the same with the suite's block.
func suiteWrapper(t *testing.T, sni, upstream, catchAll string) string {
	block := fmt.Sprintf("passthrough {\n%s %s\n", sni, upstream)
	if catchAll != "" {
		block += "default " + catchAll + "\n"
	}
	return blockWrapper(t, block+"}", catchAll != "")
}

// TestCaddyL4Shortfalls runs the ClientHellos that the pinned caddy-l4
// misroutes through both configs: the hand-written caddy-l4 one must show
// the bug (this documents it, and tells us when an upgrade fixes it) and
// the suite's must route every one of them right.
func TestCaddyL4Shortfalls(t *testing.T) {
	bigALPN := &tls.Config{NextProtos: manyALPN(200)} // a ClientHello of about 3.5 KiB
	for _, tc := range []struct {
		name     string
		catchAll bool
		shape    shape
		cfg      *tls.Config
	}{
		{"ClientHello in several TLS records", false, shape{recordSize: 400}, nil},
		{"ClientHello over 2 KiB with a catch-all route", true, shape{}, bigALPN},
		{"ClientHello in several TCP segments with a catch-all route", true, shape{segment: 200, pause: 30 * time.Millisecond}, nil},
		{"ClientHello in records and segments with a catch-all route", true, shape{recordSize: 300, segment: 100, pause: 20 * time.Millisecond}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, impl := range []string{"caddy-l4", "suite"} {
				db := startBackend(t, "db.example.com")
				other := startBackend(t, "other.example.com")
				catchAll := ""
				if tc.catchAll {
					catchAll = other.addr
				}
				var f *front
				if impl == "caddy-l4" {
					f = startFront(t, plainWrapper("db.example.com", db.addr, catchAll))
				} else {
					f = startFront(t, suiteWrapper(t, "db.example.com", db.addr, catchAll))
				}
				body, cn, err := fetch(t, f.addr, "db.example.com", tc.shape, &tls.Config{InsecureSkipVerify: true, NextProtos: cfgProtos(tc.cfg)})
				routed := err == nil && body == "backend:db.example.com"
				switch {
				case impl == "suite" && !routed:
					t.Errorf("suite: got %q from %q (%v), want backend:db.example.com", body, cn, err)
				case impl == "caddy-l4" && routed:
					t.Errorf("caddy-l4 routed this ClientHello right: the pinned version's bug is gone, revisit the workaround")
				case impl == "caddy-l4":
					t.Logf("caddy-l4 misroutes it, as expected: got %q from %q (%v)", body, cn, err)
				}
			}
		})
	}
}

func cfgProtos(c *tls.Config) []string {
	if c == nil {
		return nil
	}
	return c.NextProtos
}

// TestMaxConnections checks that open connections count against
// max_connections: caddy-l4's proxy never counts them, so its limit does
// nothing.
func TestMaxConnections(t *testing.T) {
	for _, impl := range []string{"caddy-l4", "suite"} {
		t.Run(impl, func(t *testing.T) {
			hold := make(chan struct{})
			defer close(hold)
			a := startBackend(t, "db.example.com", withHold(hold))
			b := startBackend(t, "db.example.com", withHold(hold))
			var f *front
			if impl == "caddy-l4" {
				f = startFront(t, fmt.Sprintf(`{"routes":[{"match":[{"tls":{"sni":["db.example.com"]}}],"handle":[{"handler":"proxy","upstreams":[{"dial":[%q],"max_connections":1},{"dial":[%q],"max_connections":1}]}]}]}`, a.addr, b.addr))
			} else {
				f = startFront(t, blockWrapper(t, fmt.Sprintf("passthrough {\ndb.example.com %s %s {\nmax_connections 1\n}\n}", a.addr, b.addr), false))
			}
			var open []net.Conn
			defer func() {
				for _, c := range open {
					c.Close()
				}
			}()
			served := 0
			for range 3 {
				c, err := dialHolding(t, f.addr, "db.example.com")
				if err == nil {
					served++
					open = append(open, c)
				}
			}
			if impl == "suite" && served != 2 {
				t.Fatalf("suite served %d connections with two upstreams of max_connections 1, want 2", served)
			}
			if impl == "caddy-l4" {
				if served != 3 {
					t.Fatalf("caddy-l4 served %d: its max_connections now works, revisit the workaround", served)
				}
				t.Logf("caddy-l4 served all 3 connections despite max_connections 1 on 2 upstreams, as expected")
			}
		})
	}
}

// dialHolding completes a handshake through the front and reads the
// greeting, keeping the connection open.
func dialHolding(t *testing.T, addr, sni string) (net.Conn, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: testCA().Pool()})
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	buf := make([]byte, 64)
	n, err := tc.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "backend:") {
		raw.Close()
		return nil, fmt.Errorf("greeting %q: %v", buf[:n], err)
	}
	_ = raw.SetDeadline(time.Time{})
	return tc, nil
}

// TestLeastConnBalancesOpenConnections: with every connection held open,
// least_conn must alternate exactly (caddy-l4's acts as random, since it
// never counts).
func TestLeastConnBalancesOpenConnections(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	a := startBackend(t, "db.example.com", withHold(hold))
	b := startBackend(t, "db.example.com", withHold(hold))
	f := startFront(t, blockWrapper(t, fmt.Sprintf("passthrough {\ndb.example.com %s %s {\nlb_policy least_conn\n}\n}", a.addr, b.addr), false))
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := range 8 {
		c, err := dialHolding(t, f.addr, "db.example.com")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if d := a.accepted.Load() - b.accepted.Load(); d < -1 || d > 1 {
			t.Fatalf("after %d connections: %d and %d", i+1, a.accepted.Load(), b.accepted.Load())
		}
	}
	if a.accepted.Load() != 4 || b.accepted.Load() != 4 {
		t.Fatalf("least_conn spread 8 open connections as %d/%d, want 4/4", a.accepted.Load(), b.accepted.Load())
	}
}

// TestDialTimeout: an upstream that never accepts. The suite gives up
// after dial_timeout and closes the client's connection; caddy-l4's proxy
// has no dial timeout and keeps the client waiting on the kernel's
// connect timeout (minutes).
func TestDialTimeout(t *testing.T) {
	hang := hangingAddr(t)
	for _, impl := range []string{"caddy-l4", "suite"} {
		t.Run(impl, func(t *testing.T) {
			var f *front
			if impl == "caddy-l4" {
				f = startFront(t, plainWrapper("db.example.com", hang, ""))
			} else {
				logs := observeLogs(t)
				defer func() {
					lines := logsWith(logs, "passthrough connection")
					// the line names the upstream that failed (issue 22)
					if len(lines) != 1 || lines[0]["close_reason"] != "dial_failed" || lines[0]["upstream"] != hang {
						t.Errorf("log lines %v, want one with close_reason dial_failed and upstream %s", lines, hang)
					}
				}()
				f = startFront(t, blockWrapper(t, fmt.Sprintf("passthrough {\ndb.example.com %s {\ndial_timeout 300ms\n}\n}", hang), false))
			}
			c, err := net.Dial("tcp", f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tc := tls.Client(c, &tls.Config{ServerName: "db.example.com", InsecureSkipVerify: true})
			// the client waits up to 4s for an answer or a close
			_ = c.SetDeadline(time.Now().Add(4 * time.Second))
			err = tc.Handshake()
			closed := err != nil && !isTimeout(err)
			if impl == "suite" && !closed {
				t.Fatalf("suite: handshake ended with %v, want the connection closed after the dial timeout", err)
			}
			if impl == "caddy-l4" {
				if closed {
					t.Fatalf("caddy-l4 closed the connection (%v): it has a dial timeout now, revisit the workaround", err)
				}
				t.Logf("caddy-l4 kept the client waiting 4s on a dead upstream, as expected")
			}
		})
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestGarbageFirstPacket: bytes that are not TLS fall through to the TLS
// server behind the wrapper (which rejects them); no backend sees them.
func TestGarbageFirstPacket(t *testing.T) {
	db := startBackend(t, "db.example.com")
	logs := observeLogs(t)
	f := startFront(t, blockWrapper(t, "passthrough {\ndb.example.com "+db.addr+"\n}", false))
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: db.example.com\r\n\r\n"))
	_, _ = io.ReadAll(c)
	waitFor(t, "the fall-through", func() bool { return f.fellThrough.Load() == 1 })
	if db.accepted.Load() != 0 {
		t.Fatal("the backend got a connection for a non-TLS first packet")
	}
	lines := logsWith(logs, "no routable ClientHello")
	if len(lines) != 1 || lines[0]["reason"] != "not_tls" {
		t.Fatalf("log lines %v, want one with reason not_tls", lines)
	}
}

// TestSilentClient: a client that connects and sends nothing is closed
// after the matching timeout, and no goroutine is left behind.
func TestSilentClient(t *testing.T) {
	db := startBackend(t, "db.example.com")
	f := startFront(t, blockWrapper(t, "passthrough {\ndb.example.com "+db.addr+"\nmatching_timeout 300ms\n}", false))
	settle := func() int {
		runtime.GC()
		time.Sleep(100 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	before := settle()
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || err != io.EOF {
			t.Fatalf("silent client: read %d, %v; want the server to close (EOF)", n, err)
		}
		c.Close()
	}
	waitFor(t, "goroutines to settle", func() bool { return settle() <= before })
	if db.accepted.Load() != 0 || f.fellThrough.Load() != 0 {
		t.Fatal("a silent client reached a backend or the fall-through server")
	}
}
