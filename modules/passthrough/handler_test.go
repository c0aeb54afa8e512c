package passthrough

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// dialTLS connects through the front and returns the TLS conn and the
// client's own TCP address.
func dialTLS(t *testing.T, addr, sni string, cfg *tls.Config) (*tls.Conn, net.Addr) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if cfg == nil {
		cfg = new(tls.Config)
	}
	cfg = cfg.Clone()
	cfg.ServerName, cfg.RootCAs = sni, testCA().Pool()
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return tc, raw.LocalAddr()
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: got %q, %v", buf, err)
	}
}

func TestProxyProtocolHeader(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			db := startBackend(t, "db.example.com", withProxyProtocol())
			f := startFront(t, blockWrapper(t, fmt.Sprintf("passthrough {\ndb.example.com %s\nproxy_protocol %s\n}", db.addr, v), false))
			tc, local := dialTLS(t, f.addr, "db.example.com", nil)
			body, _ := io.ReadAll(tc)
			if string(body) != "backend:db.example.com" {
				t.Fatalf("got %q", body)
			}
			h := <-db.headers
			if h.SourceAddr.String() != local.String() {
				t.Fatalf("PROXY %s source %s, want the client's %s", v, h.SourceAddr, local)
			}
			if h.DestinationAddr.String() != f.addr {
				t.Fatalf("PROXY %s destination %s, want %s", v, h.DestinationAddr, f.addr)
			}
			if int(h.Version) != int(v[1]-'0') {
				t.Fatalf("PROXY version %d, want %s", h.Version, v)
			}
		})
	}
}

// TestCopyJoinsRawTCPConns: after the replay, the copy loop joins the
// two *net.TCPConn themselves (not caddy-l4's wrappers), so io.Copy
// takes the kernel's splice path.
func TestCopyJoinsRawTCPConns(t *testing.T) {
	var mu sync.Mutex
	var down, up net.Conn
	testHookProxy = func(d, u net.Conn) { mu.Lock(); down, up = d, u; mu.Unlock() }
	defer func() { testHookProxy = nil }()
	db := startBackend(t, "db.example.com", withEcho())
	f := startFront(t, blockWrapper(t, "passthrough {\ndb.example.com "+db.addr+"\n}", false))
	tc, _ := dialTLS(t, f.addr, "db.example.com", nil)
	echo(t, tc, strings.Repeat("x", 100000))
	mu.Lock()
	defer mu.Unlock()
	if _, ok := down.(*net.TCPConn); !ok {
		t.Fatalf("client side is %T, want *net.TCPConn", down)
	}
	if _, ok := up.(*net.TCPConn); !ok {
		t.Fatalf("upstream side is %T, want *net.TCPConn", up)
	}
}

func TestMaxLifetime(t *testing.T) {
	logs := observeLogs(t)
	db := startBackend(t, "db.example.com", withEcho())
	f := startFront(t, blockWrapper(t, "passthrough {\ndb.example.com "+db.addr+"\nmax_lifetime 300ms\n}", false))
	tc, _ := dialTLS(t, f.addr, "db.example.com", nil)
	echo(t, tc, "hello")
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection outlived max_lifetime")
	}
	waitFor(t, "the log line", func() bool { return len(logsWith(logs, "passthrough connection")) == 1 })
	if r := logsWith(logs, "passthrough connection")[0]["close_reason"]; r != "max_lifetime" {
		t.Fatalf("close_reason %v, want max_lifetime", r)
	}
}

func TestIdleTimeout(t *testing.T) {
	logs := observeLogs(t)
	db := startBackend(t, "db.example.com", withEcho())
	f := startFront(t, blockWrapper(t, "passthrough {\ndb.example.com "+db.addr+"\nidle_timeout 400ms\n}", false))
	tc, _ := dialTLS(t, f.addr, "db.example.com", nil)
	// traffic every 100ms keeps it open well past the idle timeout
	for range 10 {
		echo(t, tc, "ping")
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Fatal("an idle connection stayed open")
	}
	waitFor(t, "the log line", func() bool { return len(logsWith(logs, "passthrough connection")) == 1 })
	if r := logsWith(logs, "passthrough connection")[0]["close_reason"]; r != "idle_timeout" {
		t.Fatalf("close_reason %v, want idle_timeout", r)
	}
}

// TestUnloadKeepsConnections: after the config is unloaded (an admin
// reload), an open connection keeps working on its old route; with a
// grace period it is closed when the period ends.
func TestUnloadKeepsConnections(t *testing.T) {
	for _, grace := range []string{"", "400ms"} {
		t.Run("grace_period="+grace, func(t *testing.T) {
			logs := observeLogs(t)
			db := startBackend(t, "db.example.com", withEcho())
			block := "passthrough {\ndb.example.com " + db.addr + "\n"
			if grace != "" {
				block += "grace_period " + grace + "\n"
			}
			f := startFront(t, blockWrapper(t, block+"}", false))
			tc, _ := dialTLS(t, f.addr, "db.example.com", nil)
			echo(t, tc, "before")
			f.unload()
			echo(t, tc, "right after the unload")
			unloaded := logsWith(logs, "config unloaded: open passthrough connections finish on their old route (no grace_period set)")
			if grace != "" {
				unloaded = logsWith(logs, "config unloaded: open passthrough connections finish on their old route until the grace period ends")
			}
			if len(unloaded) != 1 || unloaded[0]["connections"] != int64(1) {
				t.Fatalf("unload log %v", unloaded)
			}
			if grace == "" {
				time.Sleep(800 * time.Millisecond)
				echo(t, tc, "long after the unload")
				return
			}
			if _, err := tc.Read(make([]byte, 1)); err == nil {
				t.Fatal("the connection outlived the grace period")
			}
			waitFor(t, "the log line", func() bool { return len(logsWith(logs, "passthrough connection")) == 1 })
			if r := logsWith(logs, "passthrough connection")[0]["close_reason"]; r != "grace_period" {
				t.Fatalf("close_reason %v, want grace_period", r)
			}
		})
	}
}

func TestRefuse(t *testing.T) {
	logs := observeLogs(t)
	db := startBackend(t, "db.example.com")
	f := startFront(t, blockWrapper(t, "passthrough {\ndb.example.com "+db.addr+"\ndefault refuse\nrefuse_tls12\n}", true))
	_, _, err := fetch(t, f.addr, "unknown.example.com", shape{}, nil)
	if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Fatalf("unknown name: %v, want an unrecognized name alert", err)
	}
	_, _, err = fetch(t, f.addr, "db.example.com", shape{}, &tls.Config{MaxVersion: tls.VersionTLS12})
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.2 client: %v, want a protocol version alert", err)
	}
	body, _, err := fetch(t, f.addr, "db.example.com", shape{}, nil)
	if err != nil || body != "backend:db.example.com" {
		t.Fatalf("TLS 1.3 client: %q, %v", body, err)
	}
	lines := logsWith(logs, "passthrough connection refused")
	if len(lines) != 2 || lines[0]["route"] != "default" || lines[0]["server_name"] != "unknown.example.com" ||
		lines[1]["route"] != "refuse_tls12" || lines[1]["max_version"] != "tls1.2" {
		t.Fatalf("refusal log lines %v", lines)
	}
	if db.accepted.Load() != 1 {
		t.Fatalf("backend accepted %d, want 1", db.accepted.Load())
	}
}

func TestFailoverAndPassiveHealth(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	good := startBackend(t, "db.example.com")
	f := startFront(t, blockWrapper(t, fmt.Sprintf("passthrough {\ndb.example.com %s %s {\nname failover\nlb_policy first\nfail_duration 1m\n}\n}", dead, good.addr), false))
	failures := func() float64 {
		return counterValue(t, f, "trustline_passthrough_upstream_dial_failures_total", "failover", dead)
	}
	before := failures()
	for i := range 3 {
		body, _, err := fetch(t, f.addr, "db.example.com", shape{}, nil)
		if err != nil || body != "backend:db.example.com" {
			t.Fatalf("connection %d: %q, %v", i, body, err)
		}
	}
	if got := failures() - before; got != 1 {
		t.Fatalf("%v dial failures to the dead upstream, want 1 (then passive health takes it out)", got)
	}
}

func TestActiveHealth(t *testing.T) {
	logs := observeLogs(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	good := startBackend(t, "db.example.com")
	f := startFront(t, blockWrapper(t, fmt.Sprintf("passthrough {\ndb.example.com %s %s {\nname active\nlb_policy first\nhealth_interval 100ms\nhealth_timeout 1s\n}\n}", dead, good.addr), false))
	waitFor(t, "the dead upstream to be marked down", func() bool { return len(logsWith(logs, "upstream is down")) > 0 })
	for range 3 {
		if body, _, err := fetch(t, f.addr, "db.example.com", shape{}, nil); err != nil || body != "backend:db.example.com" {
			t.Fatalf("%q, %v", body, err)
		}
	}
	if got := counterValue(t, f, "trustline_passthrough_upstream_dial_failures_total", "active", dead); got != 0 {
		t.Fatalf("%v dials to an upstream that health checks marked down", got)
	}
}

func TestLogLineAndMetrics(t *testing.T) {
	logs := observeLogs(t)
	db := startBackend(t, "db.example.com")
	f := startFront(t, blockWrapper(t, "passthrough {\ndb.example.com "+db.addr+" {\nname db\n}\n}", false))
	before := counterValue(t, f, "trustline_passthrough_connections_total", "db", "proxied")
	tc, local := dialTLS(t, f.addr, "db.example.com", &tls.Config{NextProtos: []string{"postgresql", "h2"}})
	if body, _ := io.ReadAll(tc); string(body) != "backend:db.example.com" {
		t.Fatalf("got %q", body)
	}
	tc.Close()
	waitFor(t, "the log line", func() bool { return len(logsWith(logs, "passthrough connection")) == 1 })
	line := logsWith(logs, "passthrough connection")[0]
	want := map[string]any{
		"client_addr": local.String(), "server_name": "db.example.com", "route": "db",
		"upstream": db.addr, "close_reason": "upstream_closed",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log field %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	if alpn, ok := line["alpn"].([]any); !ok || len(alpn) != 2 || alpn[0] != "postgresql" {
		t.Errorf("log field alpn = %v", line["alpn"])
	}
	if n, _ := line["bytes_from_client"].(int64); n < 200 {
		t.Errorf("bytes_from_client = %v, want at least the ClientHello", line["bytes_from_client"])
	}
	if n, _ := line["bytes_to_client"].(int64); n < 200 {
		t.Errorf("bytes_to_client = %v, want at least the server's flight", line["bytes_to_client"])
	}
	if _, ok := line["duration"]; !ok {
		t.Error("no duration in the log line")
	}
	if got := counterValue(t, f, "trustline_passthrough_connections_total", "db", "proxied") - before; got != 1 {
		t.Errorf("connections_total{route=db,outcome=proxied} rose by %v, want 1", got)
	}
	if got := counterValue(t, f, "trustline_passthrough_bytes_total", "db", "upstream_to_client"); got < 200 {
		t.Errorf("bytes_total{route=db,direction=upstream_to_client} = %v", got)
	}
}

// counterValue reads a metric with the given label values from the
// front's config registry (which the modules registered into); 0 when it
// has no such series.
func counterValue(t *testing.T, f *front, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := f.ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, labels) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
		return 0
	}
	return 0 // a vector with no series yet is not gathered
}

func labelsMatch(m *dto.Metric, values []string) bool {
	got := map[string]bool{}
	for _, lp := range m.GetLabel() {
		got[lp.GetValue()] = true
	}
	for _, v := range values {
		if !got[v] {
			return false
		}
	}
	return true
}
