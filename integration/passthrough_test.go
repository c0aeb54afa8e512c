package integration

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/hellotest"
	"github.com/trustline/trustline/internal/testpki"
)

// ptBackend is a TLS server with a certificate of its own, the kind of
// backend passthrough exists for. serve runs after the handshake.
type ptBackend struct {
	name     string
	addr     string
	headers  chan *proxyproto.Header
	peers    chan string // client certificate CNs (mTLS)
	accepted atomic.Int64
	served   atomic.Int64 // connections that completed a TLS handshake
}

type ptBackendOpts struct {
	proxyProtocol bool
	clientCAs     *testpki.CA
	serve         func(tc *tls.Conn)
}

func ptStartBackend(t *testing.T, ca *testpki.CA, name string, o ptBackendOpts) *ptBackend {
	t.Helper()
	leaf := ca.Issue(t, testpki.CN(name), testpki.DNS(name), testpki.ServerOnly())
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}}
	if o.clientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = o.clientCAs.Pool()
	}
	if o.serve == nil {
		o.serve = func(tc *tls.Conn) { _, _ = tc.Write([]byte("backend:" + name)) }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &ptBackend{name: name, addr: ln.Addr().String(), headers: make(chan *proxyproto.Header, 100), peers: make(chan string, 100)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			go func() {
				defer c.Close()
				var conn net.Conn = c
				if o.proxyProtocol {
					br := bufio.NewReader(c)
					h, err := proxyproto.Read(br)
					if err != nil {
						return
					}
					b.headers <- h
					conn = &ptBufConn{Conn: c, r: br}
				}
				tc := tls.Server(conn, cfg)
				if err := tc.Handshake(); err != nil {
					return
				}
				b.served.Add(1)
				if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
					b.peers <- pc[0].Subject.CommonName
				}
				o.serve(tc)
				_ = tc.Close()
			}()
		}
	}()
	return b
}

type ptBufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *ptBufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ptDial opens a TLS connection to addr with sni and returns it with the
// client's TCP address.
func ptDial(t *testing.T, addr, sni string, cfg *tls.Config) (*tls.Conn, net.Addr) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(60 * time.Second))
	if cfg == nil {
		cfg = &tls.Config{InsecureSkipVerify: true}
	}
	cfg = cfg.Clone()
	cfg.ServerName = sni
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake with %s for %s: %v", addr, sni, err)
	}
	return tc, raw.LocalAddr()
}

// ptLogLines returns the JSON log lines of c whose msg is msg.
func ptLogLines(c *bench.Caddy, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(c.Log(), "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func ptWaitLogLines(t *testing.T, c *bench.Caddy, msg string, n int, match func(map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got []map[string]any
		for _, m := range ptLogLines(c, msg) {
			if match == nil || match(m) {
				got = append(got, m)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d log lines %q matching, want %d\n%s", len(got), msg, n, c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ptStart starts Caddy with a ptSite config and waits until its site
// answers: Caddy issues the site's certificate (tls internal) just after
// it starts, and until then its own handshakes for the name fail.
func ptStart(t *testing.T, port, conf string) *bench.Caddy {
	t.Helper()
	c := bench.Start(t, conf)
	c.WaitLog(t, `"msg":"certificate obtained successfully","identifier":"site.example.com"`, 30*time.Second)
	url := "https://site.example.com:" + port + "/"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, _, code := bench.Curl(t, "-k", "--resolve", "site.example.com:"+port+":127.0.0.1", url)
		if code == 0 {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("Caddy's site on port %s never answered (curl exit %d)", port, code)
		}
	}
}

// ptSite is a Caddyfile with one TLS site on port and a passthrough block.
func ptSite(port, passthrough string, extraGlobal string) string {
	return `{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	` + extraGlobal + `
}

https://site.example.com:` + port + ` {
	tls internal
	respond "caddy-site"
	passthrough {
` + passthrough + `
	}
}
`
}

var opensslSubject = regexp.MustCompile(`(?m)^subject=.*$`)
var opensslIssuer = regexp.MustCompile(`(?m)^issuer=.*$`)

// TestPassthroughBesideSite: on one port, a passed-through name shows the
// backend's own certificate and a terminated name Caddy's; the backend
// gets a PROXY v2 header with the real client address; the connection is
// logged and counted on /metrics.
func TestPassthroughBesideSite(t *testing.T) {
	bench.Need(t, "openssl")
	ca := testpki.NewCA(t, "backend CA")
	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{proxyProtocol: true})
	front := bench.FreeAddr(t)
	port := bench.Port(front)
	c := ptStart(t, port, ptSite(port, `		db.example.com `+db.addr+` {
			proxy_protocol v2
		}`, ""))

	out := bench.OpenSSL(t, "s_client", "-connect", front, "-servername", "db.example.com")
	if s := opensslSubject.FindString(out); !strings.Contains(s, "db.example.com") {
		t.Fatalf("passed-through name: openssl shows %q, want the backend's certificate\n%s", s, out)
	}
	if s := opensslIssuer.FindString(out); !strings.Contains(s, "backend CA") {
		t.Fatalf("passed-through name: issuer %q, want backend CA", s)
	}
	<-db.headers // openssl's own connection

	out = bench.OpenSSL(t, "s_client", "-connect", front, "-servername", "site.example.com")
	if s := opensslIssuer.FindString(out); !strings.Contains(s, "Caddy Local Authority") {
		t.Fatalf("terminated name: openssl shows issuer %q, want Caddy's internal CA\n%s", s, out)
	}
	body, _, code := bench.Curl(t, "-k", "--resolve", "site.example.com:"+port+":127.0.0.1", "https://site.example.com:"+port+"/")
	if code != 0 || body != "caddy-site" {
		t.Fatalf("terminated site: %q (curl exit %d)", body, code)
	}

	tc, local := ptDial(t, front, "db.example.com", &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2", "http/1.1"}})
	got, _ := io.ReadAll(tc)
	tc.Close()
	if string(got) != "backend:db.example.com" {
		t.Fatalf("got %q", got)
	}
	h := <-db.headers
	if h.Version != 2 || h.SourceAddr.String() != local.String() {
		t.Fatalf("PROXY header v%d from %s, want v2 from the client's %s", h.Version, h.SourceAddr, local)
	}
	if db.accepted.Load() != 2 {
		t.Fatalf("backend accepted %d connections, want 2 (the terminated name must not reach it)", db.accepted.Load())
	}

	lines := ptWaitLogLines(t, c, "passthrough connection", 1, func(m map[string]any) bool { return m["client_addr"] == local.String() })
	l := lines[0]
	if l["server_name"] != "db.example.com" || l["route"] != "db.example.com" || l["upstream"] != db.addr || l["close_reason"] == "" {
		t.Fatalf("log line %v", l)
	}
	if n, _ := l["bytes_to_client"].(float64); n < 500 {
		t.Fatalf("bytes_to_client %v", l["bytes_to_client"])
	}
	metrics := c.Metrics(t)
	for _, want := range []string{
		`trustline_passthrough_connections_total{outcome="proxied",route="db.example.com"} 2`,
		`trustline_passthrough_bytes_total{direction="upstream_to_client",route="db.example.com"}`,
		`trustline_passthrough_active_connections{route="db.example.com"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(c.Log(), "HTTP/3 does not cover passed-through names") {
		t.Error("no HTTP/3 warning in the log")
	}
}

// TestPassthroughBehindHAProxy: HAProxy in mode tcp is the network load
// balancer in front, sending PROXY v2 to Caddy; Caddy's proxy_protocol
// listener wrapper reads it, passthrough routes, and the backend gets a
// PROXY v2 header naming the real client, not HAProxy.
func TestPassthroughBehindHAProxy(t *testing.T) {
	bench.Need(t, "haproxy")
	ca := testpki.NewCA(t, "backend CA")
	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{proxyProtocol: true})
	front := bench.FreeAddr(t)
	port := bench.Port(front)
	ptStart(t, port, ptSite(port, `		db.example.com `+db.addr+`
		proxy_protocol v2`, `servers :`+port+` {
		protocols h1 h2
		listener_wrappers {
			proxy_protocol {
				allow 127.0.0.1/32
			}
			tls
		}
	}`))
	lb := bench.FreeAddr(t)
	bench.StartHAProxy(t, `global
	maxconn 4096
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend fe
	bind `+lb+`
	default_backend caddy
backend caddy
	server c1 `+front+` send-proxy-v2
`)
	bench.WaitPort(t, lb, 10*time.Second)
	tc, local := ptDial(t, lb, "db.example.com", &tls.Config{RootCAs: ca.Pool()})
	if got, _ := io.ReadAll(tc); string(got) != "backend:db.example.com" {
		t.Fatalf("through HAProxy: got %q", got)
	}
	h := <-db.headers
	if h.SourceAddr.String() != local.String() {
		t.Fatalf("backend's PROXY header says %s, want the client's %s (HAProxy's address would mean the chain lost it)", h.SourceAddr, local)
	}
	body, _, code := bench.Curl(t, "-k", "--resolve", "site.example.com:"+bench.Port(lb)+":127.0.0.1", "https://site.example.com:"+bench.Port(lb)+"/")
	if code != 0 || body != "caddy-site" {
		t.Fatalf("terminated site through HAProxy: %q (curl exit %d)", body, code)
	}
}

// ptStream is a deterministic byte stream.
func ptStream(seed uint64, n int64) io.Reader {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return io.LimitReader(readerFunc(func(p []byte) (int, error) {
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		return len(p), nil
	}), n)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestPassthroughLargeTransfer sends 100 MiB each way through passthrough
// and checks both arrive byte-identical.
func TestPassthroughLargeTransfer(t *testing.T) {
	const size = 100 << 20
	ca := testpki.NewCA(t, "backend CA")
	want := sha256.New()
	_, _ = io.Copy(want, ptStream(2, size))
	wantDown := hex.EncodeToString(want.Sum(nil))
	up := sha256.New()
	_, _ = io.Copy(up, ptStream(1, size))
	wantUp := hex.EncodeToString(up.Sum(nil))

	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{serve: func(tc *tls.Conn) {
		h := sha256.New()
		if _, err := io.Copy(h, io.LimitReader(tc, size)); err != nil {
			return
		}
		_, _ = tc.Write([]byte(hex.EncodeToString(h.Sum(nil))))
		_, _ = io.Copy(tc, ptStream(2, size))
	}})
	front := bench.FreeAddr(t)
	c := ptStart(t, bench.Port(front), ptSite(bench.Port(front), "		db.example.com "+db.addr, ""))
	tc, _ := ptDial(t, front, "db.example.com", &tls.Config{RootCAs: ca.Pool()})
	go func() { _, _ = io.Copy(tc, ptStream(1, size)) }()
	gotUp := make([]byte, 64)
	if _, err := io.ReadFull(tc, gotUp); err != nil {
		t.Fatal(err)
	}
	if string(gotUp) != wantUp {
		t.Fatalf("upload: backend hashed %s, want %s", gotUp, wantUp)
	}
	down := sha256.New()
	n, err := io.Copy(down, tc)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(down.Sum(nil)); n != size || got != wantDown {
		t.Fatalf("download: %d bytes hashing %s, want %d bytes hashing %s", n, got, size, wantDown)
	}
	tc.Close()
	line := ptWaitLogLines(t, c, "passthrough connection", 1, nil)[0]
	if n, _ := line["bytes_from_client"].(float64); n < size {
		t.Fatalf("bytes_from_client %v, want over %d", line["bytes_from_client"], size)
	}
}

// TestPassthroughMTLSBackend: the backend behind passthrough asks for a
// client certificate and sees the client's own.
func TestPassthroughMTLSBackend(t *testing.T) {
	bench.Need(t, "openssl")
	ca := testpki.NewCA(t, "mesh CA")
	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{clientCAs: ca})
	front := bench.FreeAddr(t)
	ptStart(t, bench.Port(front), ptSite(bench.Port(front), "		db.example.com "+db.addr, ""))
	alice := ca.Issue(t, testpki.CN("alice"), testpki.ClientOnly())
	tc, _ := ptDial(t, front, "db.example.com", &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{alice.TLS()}})
	if got, _ := io.ReadAll(tc); string(got) != "backend:db.example.com" {
		t.Fatalf("got %q", got)
	}
	if cn := <-db.peers; cn != "alice" {
		t.Fatalf("backend saw client certificate %q, want alice", cn)
	}
	// and with openssl as the client
	dir := t.TempDir()
	bob := ca.Issue(t, testpki.CN("bob"), testpki.ClientOnly())
	certFile, keyFile := bob.WriteFiles(t, dir, "bob")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	out := bench.OpenSSL(t, "s_client", "-connect", front, "-servername", "db.example.com",
		"-cert", certFile, "-key", keyFile, "-CAfile", caFile, "-verify_return_error")
	if !strings.Contains(out, "Verify return code: 0 (ok)") {
		t.Fatalf("openssl did not verify the backend:\n%s", out)
	}
	if cn := <-db.peers; cn != "bob" {
		t.Fatalf("backend saw client certificate %q, want bob", cn)
	}
}

// TestPassthroughReload: a transfer in flight when the admin API replaces
// the routes finishes on its old route, byte-identical, while new
// connections take the new route; with a grace period in the old config
// the old connection is closed when it ends, and both are logged.
func TestPassthroughReload(t *testing.T) {
	ca := testpki.NewCA(t, "backend CA")
	const chunk = 1 << 20
	release := make(chan struct{})
	a := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{serve: func(tc *tls.Conn) {
		_, _ = io.Copy(tc, ptStream(7, chunk))
		select {
		case <-release:
			_, _ = io.Copy(tc, ptStream(8, chunk))
		case <-time.After(30 * time.Second):
		}
	}})
	b := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{})
	front := bench.FreeAddr(t)
	port := bench.Port(front)
	c := ptStart(t, port, ptSite(port, "		db.example.com "+a.addr, ""))

	tc, _ := ptDial(t, front, "db.example.com", &tls.Config{RootCAs: ca.Pool()})
	first := make([]byte, chunk)
	if _, err := io.ReadFull(tc, first); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(t, ptSite(port, "		db.example.com "+b.addr+"\n		grace_period 3s", "")); err != nil {
		t.Fatal(err)
	}
	c.WaitLog(t, "config unloaded: open passthrough connections finish on their old route (no grace_period set)", 10*time.Second)
	tc2, _ := ptDial(t, front, "db.example.com", &tls.Config{RootCAs: ca.Pool()})
	if got, _ := io.ReadAll(tc2); string(got) != "backend:db.example.com" || b.accepted.Load() != 1 {
		t.Fatalf("new connection after the reload: %q, new backend accepted %d", got, b.accepted.Load())
	}
	close(release)
	second, err := io.ReadAll(tc)
	if err != nil {
		t.Fatalf("the old connection broke: %v", err)
	}
	h1, h2 := sha256.New(), sha256.New()
	_, _ = io.Copy(h1, io.MultiReader(ptStream(7, chunk), ptStream(8, chunk)))
	h2.Write(first)
	h2.Write(second)
	if len(second) != chunk || string(h1.Sum(nil)) != string(h2.Sum(nil)) {
		t.Fatalf("the old connection delivered %d+%d bytes, not the backend's stream", len(first), len(second))
	}
	if a.accepted.Load() != 1 {
		t.Fatalf("old backend accepted %d connections, want 1", a.accepted.Load())
	}

	// The current config has grace_period 3s: a connection held open
	// across the next reload is closed 3s after it.
	hold := ptStartBackend(t, ca, "hold.example.com", ptBackendOpts{serve: func(tc *tls.Conn) {
		_, _ = tc.Write([]byte("held"))
		_, _ = io.Copy(io.Discard, tc)
	}})
	if err := c.Load(t, ptSite(port, "		db.example.com "+b.addr+"\n		hold.example.com "+hold.addr+"\n		grace_period 3s", "")); err != nil {
		t.Fatal(err)
	}
	tc3, _ := ptDial(t, front, "hold.example.com", &tls.Config{RootCAs: ca.Pool()})
	greeting := make([]byte, 4)
	if _, err := io.ReadFull(tc3, greeting); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(t, ptSite(port, "		db.example.com "+b.addr, "")); err != nil {
		t.Fatal(err)
	}
	c.WaitLog(t, "until the grace period ends", 10*time.Second)
	if _, err := tc3.Write([]byte("still here")); err != nil {
		t.Fatalf("the held connection broke at the reload, before its grace period: %v", err)
	}
	_ = tc3.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := tc3.Read(make([]byte, 1)); err == nil || isNetTimeout(err) {
		t.Fatalf("the held connection was not closed after the grace period: %v", err)
	}
	ptWaitLogLines(t, c, "passthrough connection", 1, func(m map[string]any) bool {
		return m["server_name"] == "hold.example.com" && m["close_reason"] == "grace_period"
	})
}

func isNetTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestPassthroughBadClients: the first flights that go wrong in real life.
func TestPassthroughBadClients(t *testing.T) {
	ca := testpki.NewCA(t, "backend CA")
	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{serve: func(tc *tls.Conn) {}})
	front := bench.FreeAddr(t)
	c := ptStart(t, bench.Port(front), ptSite(bench.Port(front), "		db.example.com "+db.addr+"\n		matching_timeout 1s", ""))

	// ClientHellos in odd shapes all reach the backend: many TCP
	// segments, several TLS records, over 2 KiB (many ALPN values).
	var protos []string
	for i := range 250 {
		protos = append(protos, "proto-"+strconv.Itoa(i))
	}
	big := hellotest.Go(t, &tls.Config{ServerName: "db.example.com", NextProtos: protos})
	if len(big) < 2048 {
		t.Fatalf("the large ClientHello is only %d bytes", len(big))
	}
	small := hellotest.Go(t, &tls.Config{ServerName: "db.example.com"})
	for _, tc := range []struct {
		name    string
		data    []byte
		segment int
	}{
		{"many TCP segments", small, 40},
		{"several TLS records", hellotest.Reframe(small, 200), 0},
		{"records and segments", hellotest.Reframe(small, 300), 70},
		{"over 2 KiB", big, 0},
		{"over 2 KiB in records and segments", hellotest.Reframe(big, 1000), 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := db.accepted.Load()
			conn, err := net.Dial("tcp", front)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			seg := tc.segment
			if seg == 0 {
				seg = len(tc.data)
			}
			for d := tc.data; len(d) > 0; {
				n := min(seg, len(d))
				if _, err := conn.Write(d[:n]); err != nil {
					t.Fatal(err)
				}
				d = d[n:]
				time.Sleep(5 * time.Millisecond)
			}
			// the backend answers with its ServerHello
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			hdr := make([]byte, 5)
			if _, err := io.ReadFull(conn, hdr); err != nil || hdr[0] != 22 {
				t.Fatalf("no ServerHello back: %x %v", hdr, err)
			}
			if db.accepted.Load() != before+1 {
				t.Fatal("the ClientHello did not reach the backend")
			}
		})
	}

	t.Run("garbage first packet", func(t *testing.T) {
		before := db.accepted.Load()
		conn, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: db.example.com\r\n\r\n"))
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatalf("the connection was not closed: %v", err)
		}
		ptWaitLogLines(t, c, "no routable ClientHello", 1, func(m map[string]any) bool { return m["reason"] == "not_tls" })
		if db.accepted.Load() != before {
			t.Fatal("garbage reached the backend")
		}
	})

	t.Run("client sends nothing", func(t *testing.T) {
		goroutines := func() float64 {
			m := regexp.MustCompile(`(?m)^go_goroutines (\d+)`).FindStringSubmatch(c.Metrics(t))
			if m == nil {
				t.Fatal("no go_goroutines on /metrics")
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			return v
		}
		before := goroutines()
		var conns []net.Conn
		for range 20 {
			conn, err := net.Dial("tcp", front)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
		}
		for _, conn := range conns {
			_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("silent client: read %d, %v; want Caddy to close it after the matching timeout", n, err)
			}
			conn.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for goroutines() > before+5 {
			if time.Now().After(deadline) {
				t.Fatalf("goroutines went from %v to %v after 20 silent clients were closed", before, goroutines())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(c.Log(), "no complete ClientHello within the matching timeout") {
			t.Fatal("no log of the matching timeout")
		}
	})
}

// TestPassthroughStandalone: a port with no HTTP server; unknown names
// are refused with an unrecognized_name alert; a standalone port that
// clashes with an HTTP server's is refused at load time.
func TestPassthroughStandalone(t *testing.T) {
	bench.Need(t, "openssl")
	ca := testpki.NewCA(t, "backend CA")
	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{})
	l4 := bench.FreeAddr(t)
	c := bench.Start(t, `{
	admin {$TL_ADMIN}
	skip_install_trust
	passthrough `+l4+` {
		db.example.com `+db.addr+`
	}
}
`)
	tc, _ := ptDial(t, l4, "db.example.com", &tls.Config{RootCAs: ca.Pool()})
	if got, _ := io.ReadAll(tc); string(got) != "backend:db.example.com" {
		t.Fatalf("got %q", got)
	}
	out := ptOpenSSL(t, "s_client", "-connect", l4, "-servername", "nope.example.com")
	if !strings.Contains(out, "unrecognized name") {
		t.Fatalf("unknown name: openssl said\n%s\nwant an unrecognized name alert", out)
	}
	ptWaitLogLines(t, c, "passthrough connection refused", 1, func(m map[string]any) bool { return m["server_name"] == "nope.example.com" })

	// the clash, caught by `caddy validate` (it provisions)
	site := bench.FreeAddr(t)
	file := filepath.Join(c.Dir, "clash.Caddyfile")
	if err := os.WriteFile(file, []byte(`{
	skip_install_trust
	passthrough 127.0.0.1:`+bench.Port(site)+` {
		db.example.com `+db.addr+`
	}
}
https://site.example.com:`+bench.Port(site)+` {
	tls internal
	respond "x"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := c.Command(t, "validate", "--config", file, "--adapter", "caddyfile")
	if err == nil || !strings.Contains(out, "clashes with HTTP server") {
		t.Fatalf("validate accepted a standalone passthrough port shared with an HTTP server (%v):\n%s", err, out)
	}
}

// ptOpenSSL runs openssl and returns its output whatever its exit code.
func ptOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(bench.Need(t, "openssl"), args...)
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	return string(out)
}

// TestPassthroughDefaultBesideSite: beside Caddy's own site, `default`
// takes the names Caddy does not serve (and ClientHellos without SNI),
// never the site's name.
func TestPassthroughDefaultBesideSite(t *testing.T) {
	bench.Need(t, "openssl")
	ca := testpki.NewCA(t, "backend CA")
	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{})
	legacy := ptStartBackend(t, ca, "legacy.example.com", ptBackendOpts{})
	front := bench.FreeAddr(t)
	port := bench.Port(front)
	c := ptStart(t, port, ptSite(port, "		db.example.com "+db.addr+"\n		default "+legacy.addr, ""))
	site := func() {
		t.Helper()
		body, _, code := bench.Curl(t, "-k", "--resolve", "site.example.com:"+port+":127.0.0.1", "https://site.example.com:"+port+"/")
		if code != 0 || body != "caddy-site" {
			t.Fatalf("Caddy's own site: %q (curl exit %d)", body, code)
		}
	}
	site()
	for _, sni := range []string{"unknown.example.com", ""} {
		tc, _ := ptDial(t, front, sni, nil)
		got, _ := io.ReadAll(tc)
		tc.Close()
		if string(got) != "backend:legacy.example.com" {
			t.Fatalf("SNI %q: got %q, want the default upstream", sni, got)
		}
	}
	if legacy.accepted.Load() != 2 || db.accepted.Load() != 0 {
		t.Fatalf("default upstream accepted %d, db %d", legacy.accepted.Load(), db.accepted.Load())
	}

	if err := c.Load(t, ptSite(port, "		db.example.com "+db.addr+"\n		default refuse", "")); err != nil {
		t.Fatal(err)
	}
	site()
	out := ptOpenSSL(t, "s_client", "-connect", front, "-servername", "unknown.example.com")
	if !strings.Contains(out, "unrecognized name") {
		t.Fatalf("default refuse: openssl said\n%s", out)
	}
	site()
}

// TestExamplePassthrough runs examples/passthrough/Caddyfile with
// backends of its own and checks what its README shows.
func TestExamplePassthrough(t *testing.T) {
	bench.Need(t, "openssl")
	ca := testpki.NewCA(t, "backend CA")
	db := ptStartBackend(t, ca, "db.example.test", ptBackendOpts{proxyProtocol: true})
	legacyA := ptStartBackend(t, ca, "app.legacy.example.test", ptBackendOpts{})
	legacyB := ptStartBackend(t, ca, "app.legacy.example.test", ptBackendOpts{})
	raw, err := os.ReadFile(bench.RepoPath("examples", "passthrough", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	cf := strings.Replace(string(raw), "{$TL_ADMIN:localhost:2019}", "{$TL_ADMIN}", 1)
	front := bench.FreeAddr(t)
	port := bench.Port(front)
	c := bench.Start(t, cf, "HTTPS_PORT="+port, "DB_BACKEND="+db.addr, "LEGACY_A="+legacyA.addr, "LEGACY_B="+legacyB.addr)
	// www's certificate (tls internal) is issued just after the start
	c.WaitLog(t, `"msg":"certificate obtained successfully","identifier":"www.example.test"`, 30*time.Second)

	out := bench.OpenSSL(t, "s_client", "-connect", front, "-servername", "db.example.test")
	if s := opensslSubject.FindString(out); !strings.Contains(s, "db.example.test") {
		t.Fatalf("db: %q, want the database's own certificate", s)
	}
	if h := <-db.headers; h.Version != 2 || !strings.HasPrefix(h.SourceAddr.String(), "127.0.0.1:") {
		t.Fatalf("db got PROXY v%d from %s", h.Version, h.SourceAddr)
	}
	out = bench.OpenSSL(t, "s_client", "-connect", front, "-servername", "www.example.test")
	if s := opensslIssuer.FindString(out); !strings.Contains(s, "Caddy Local Authority") {
		t.Fatalf("www: issuer %q, want Caddy's", s)
	}
	body, _, code := bench.Curl(t, "-k", "--resolve", "www.example.test:"+port+":127.0.0.1", "https://www.example.test:"+port+"/")
	if code != 0 || body != "www: TLS terminated by Caddy\n" {
		t.Fatalf("www: %q (curl exit %d)", body, code)
	}
	// four connections held open: least_conn spreads them 2/2
	for range 4 {
		tc, _ := ptDial(t, front, "app.legacy.example.test", &tls.Config{RootCAs: ca.Pool()})
		if got, _ := io.ReadAll(tc); string(got) != "backend:app.legacy.example.test" {
			t.Fatalf("legacy: got %q", got)
		}
	}
	// (health checks connect too: count the TLS sessions)
	if legacyA.served.Load() != 2 || legacyB.served.Load() != 2 {
		t.Fatalf("legacy backends served %d and %d, want 2 and 2", legacyA.served.Load(), legacyB.served.Load())
	}
	if out := ptOpenSSL(t, "s_client", "-connect", front, "-servername", "nope.example.test"); !strings.Contains(out, "unrecognized name") {
		t.Fatalf("unknown name not refused:\n%s", out)
	}
	if out := ptOpenSSL(t, "s_client", "-connect", front, "-servername", "db.example.test", "-tls1_2"); !strings.Contains(out, "protocol version") {
		t.Fatalf("TLS 1.2 client not refused:\n%s", out)
	}
	if m := c.Metrics(t); !strings.Contains(m, `trustline_passthrough_connections_total{outcome="refused",route="refuse_tls12"} 1`) {
		t.Fatalf("/metrics lacks the TLS 1.2 refusal")
	}
}

// TestPassthroughMTLSInOut: "mTLS in, mTLS out" at layer 4. caddy-l4's
// tls handler terminates the client's TLS and verifies its certificate;
// the passthrough handler then sends the verified identity in PROXY v2
// TLVs (SSL TLV with CN and DER, 0xE0 with the SPIFFE ID) to a plain-TCP
// backend, or re-encrypts to a TLS backend with Caddy's own client
// certificate, the client's identity still in the PROXY header. It runs
// with crypto/tls verifying against Caddy's trust pool under caddy-l4's
// tls handler, and with the live_trust verifier under terminate_tls (no
// VerifiedChains: the identity is the chain live_trust verified).
func TestPassthroughMTLSInOut(t *testing.T) {
	for _, v := range []struct {
		name       string
		tlsHandler func(caFile string) map[string]any
	}{
		{"tls+trust_pool", func(caFile string) map[string]any {
			return map[string]any{"handler": "tls", "connection_policies": []any{map[string]any{
				"client_authentication": map[string]any{"mode": "require_and_verify", "ca": map[string]any{"provider": "file", "pem_files": []string{caFile}}},
			}}}
		}},
		{"terminate_tls+live_trust", func(caFile string) map[string]any {
			return map[string]any{"handler": "terminate_tls", "connection_policies": []any{map[string]any{
				"client_authentication": map[string]any{"verifiers": []any{map[string]any{
					"verifier": "live_trust", "trust_pool": map[string]any{"provider": "bundle", "paths": []string{caFile}}}}},
			}}}
		}},
	} {
		t.Run(v.name, func(t *testing.T) { testPassthroughMTLSInOut(t, v.tlsHandler) })
	}
}

func testPassthroughMTLSInOut(t *testing.T, tlsHandlerOf func(caFile string) map[string]any) {
	ca := testpki.NewCA(t, "mesh CA")
	dir := t.TempDir()
	serverLeaf := ca.Issue(t, testpki.CN("l4.example.com"), testpki.DNS("plain.example.com", "reenc.example.com"), testpki.ServerOnly())
	serverCert, serverKey := serverLeaf.WriteFiles(t, dir, "server")
	proxyLeaf := ca.Issue(t, testpki.CN("caddy-proxy"), testpki.ClientOnly())
	proxyCert, proxyKey := proxyLeaf.WriteFiles(t, dir, "proxy")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	alice := ca.Issue(t, testpki.CN("alice"), testpki.URI("spiffe://example.org/ns/prod/alice"), testpki.ClientOnly())

	type seen struct {
		cn, spiffe, peerCN string
		verified           bool
		der                []byte
	}
	got := make(chan seen, 10)
	identityOf := func(h *proxyproto.Header) seen {
		var s seen
		tlvs, _ := h.TLVs()
		if ssl, ok := tlvparse.FindSSL(tlvs); ok {
			s.verified = ssl.Verified()
			s.cn, _ = ssl.ClientCN()
			s.der, _ = ssl.ClientCert()
		}
		for _, tlv := range tlvs {
			if tlv.Type == 0xE0 {
				s.spiffe = string(tlv.Value)
			}
		}
		return s
	}
	// a plain-TCP backend behind the termination
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plainLn.Close() })
	go func() {
		for {
			c, err := plainLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				if err != nil {
					return
				}
				got <- identityOf(h)
				_, _ = io.Copy(c, br) // echo, in clear
			}()
		}
	}()
	// a TLS backend that requires a client certificate (Caddy's)
	reenc := ptStartBackend(t, ca, "backend.example.com", ptBackendOpts{proxyProtocol: true, clientCAs: ca, serve: func(tc *tls.Conn) {
		_, _ = io.Copy(tc, tc)
	}})

	l4 := bench.FreeAddr(t)
	c := bench.Start(t, "{\n\tadmin {$TL_ADMIN}\n\tskip_install_trust\n}\n")
	tlsHandler := tlsHandlerOf(caFile)
	cfg := map[string]any{
		"admin": map[string]any{"listen": c.Admin},
		"apps": map[string]any{
			"tls": map[string]any{"certificates": map[string]any{"load_files": []any{map[string]any{"certificate": serverCert, "key": serverKey}}}},
			"layer4": map[string]any{"servers": map[string]any{"mtls": map[string]any{
				"listen": []string{l4},
				"routes": []any{
					map[string]any{
						"match": []any{map[string]any{"clienthello": map[string]any{"sni": []string{"plain.example.com"}}}},
						"handle": []any{tlsHandler, map[string]any{"handler": "passthrough", "route": "plain",
							"upstreams": []any{map[string]any{"dial": plainLn.Addr().String()}}, "proxy_protocol": "v2", "proxy_protocol_identity": true}},
					},
					map[string]any{
						"match": []any{map[string]any{"clienthello": map[string]any{"sni": []string{"reenc.example.com"}}}},
						"handle": []any{tlsHandler, map[string]any{"handler": "passthrough", "route": "reenc",
							"upstreams": []any{map[string]any{"dial": reenc.addr}}, "proxy_protocol": "v2", "proxy_protocol_identity": true,
							"tls": map[string]any{"ca": map[string]any{"provider": "file", "pem_files": []string{caFile}},
								"client_certificate_file": proxyCert, "client_certificate_key_file": proxyKey, "server_name": "backend.example.com"}}},
					},
				},
			}}},
		},
	}
	raw, _ := json.Marshal(cfg)
	if err := c.LoadJSON(t, raw); err != nil {
		t.Fatal(err)
	}
	bench.WaitPort(t, l4, 10*time.Second)

	check := func(s seen) {
		t.Helper()
		if !s.verified || s.cn != "alice" || s.spiffe != "spiffe://example.org/ns/prod/alice" || string(s.der) != string(alice.Cert.Raw) {
			t.Fatalf("backend read identity verified=%v cn=%q spiffe=%q der=%d bytes; want alice's, verified", s.verified, s.cn, s.spiffe, len(s.der))
		}
	}
	clientCfg := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{alice.TLS()}}
	for _, sni := range []string{"plain.example.com", "reenc.example.com"} {
		tc, _ := ptDial(t, l4, sni, clientCfg)
		if _, err := tc.Write([]byte("ping " + sni)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len("ping "+sni))
		if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "ping "+sni {
			t.Fatalf("%s: echo %q, %v", sni, buf, err)
		}
		tc.Close()
		if sni == "plain.example.com" {
			check(<-got)
			continue
		}
		h := <-reenc.headers
		check(identityOf(h))
		if cn := <-reenc.peers; cn != "caddy-proxy" {
			t.Fatalf("TLS backend saw client certificate %q, want Caddy's own (caddy-proxy)", cn)
		}
	}
	// no client certificate: the layer-4 termination refuses it
	raw2, err := net.Dial("tcp", l4)
	if err != nil {
		t.Fatal(err)
	}
	defer raw2.Close()
	_ = raw2.SetDeadline(time.Now().Add(10 * time.Second))
	nc := tls.Client(raw2, &tls.Config{RootCAs: ca.Pool(), ServerName: "plain.example.com"})
	if err := nc.Handshake(); err == nil {
		if _, err = nc.Read(make([]byte, 1)); err == nil {
			t.Fatal("a client without a certificate got through the mTLS termination")
		}
	}
	ptWaitLogLines(t, c, "passthrough connection", 2, func(m map[string]any) bool {
		return m["client_identity"] == "spiffe://example.org/ns/prod/alice"
	})
}
