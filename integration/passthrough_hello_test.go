package integration

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/hellotest"
	"github.com/trustline/trustline/internal/testpki"
)

// ClientHellos in unusual shapes, through the real binary: records of 20
// bytes, a trailing dot in the server name, an unknown version beside
// TLS 1.2.

// ptReframeConn re-frames the first thing written (crypto/tls's
// ClientHello, one record) into TLS records of size bytes, and passes the
// rest through: a real client whose ClientHello comes in small records.
type ptReframeConn struct {
	net.Conn
	size int
	done bool
}

func (c *ptReframeConn) Write(p []byte) (int, error) {
	if c.done || len(p) < 5 || p[0] != 22 || int(p[3])<<8|int(p[4]) != len(p)-5 {
		return c.Conn.Write(p)
	}
	c.done = true
	if _, err := c.Conn.Write(hellotest.Reframe(p, c.size)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ptSendHello writes a raw first flight to addr and returns the first
// record that comes back: its type, and the alert code for an alert.
func ptSendHello(t *testing.T, addr string, hello []byte) (recType, alert byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 7)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("no answer to the ClientHello: %v", err)
	}
	if b[0] == 21 {
		return 21, b[6]
	}
	return b[0], 0
}

// TestPassthroughHelloShapes, beside a site with a default upstream and
// refuse_tls12:
//   - a real Go TLS client whose ClientHello comes in 20-byte records
//     (about 80 of them) completes its handshake with the backend of its
//     name; the default route never sees it (it did: 64 records were the
//     cap);
//   - a TLS 1.2 client listing the unknown version 0x0305 beside 0x0303 is
//     refused with protocol_version (it negotiated TLS 1.2 with Caddy);
//   - "site.example.com." is Caddy's own name, not the default route's.
func TestPassthroughHelloShapes(t *testing.T) {
	ca := testpki.NewCA(t, "backend CA")
	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{})
	fallback := ptStartBackend(t, ca, "fallback.example.com", ptBackendOpts{})
	front := bench.FreeAddr(t)
	port := bench.Port(front)
	c := ptStart(t, port, ptSite(port, "		db.example.com "+db.addr+"\n		default "+fallback.addr+"\n		refuse_tls12", ""))

	t.Run("ClientHello in 20-byte records", func(t *testing.T) {
		for _, size := range []int{20, 1} {
			raw, err := net.DialTimeout("tcp", front, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = raw.SetDeadline(time.Now().Add(15 * time.Second))
			rc := &ptReframeConn{Conn: raw, size: size}
			tc := tls.Client(rc, &tls.Config{ServerName: "db.example.com", RootCAs: ca.Pool()})
			if err := tc.Handshake(); err != nil {
				t.Fatalf("records of %d bytes: handshake: %v", size, err)
			}
			if !rc.done {
				t.Fatal("the ClientHello was not re-framed")
			}
			got, _ := io.ReadAll(tc)
			raw.Close()
			if string(got) != "backend:db.example.com" {
				t.Fatalf("records of %d bytes: got %q, want backend:db.example.com", size, got)
			}
		}
		if n := fallback.accepted.Load(); n != 0 {
			t.Fatalf("the default route took %d connections", n)
		}
		ptWaitLogLines(t, c, "passthrough connection", 2, func(m map[string]any) bool { return m["upstream"] == db.addr })
		if lines := ptLogLines(c, "no routable ClientHello"); len(lines) != 0 {
			t.Fatalf("ClientHellos logged as not routable: %v", lines)
		}
	})

	t.Run("unknown version beside TLS 1.2", func(t *testing.T) {
		hello := hellotest.WithVersions(t, hellotest.Go(t, &tls.Config{ServerName: "site.example.com"}), 0x0305, 0x0303)
		typ, alert := ptSendHello(t, front, hello)
		if typ != 21 || alert != 70 {
			t.Fatalf("got record type %d (alert %d), want refuse_tls12's protocol_version alert (70)", typ, alert)
		}
		ptWaitLogLines(t, c, "passthrough connection refused", 1, func(m map[string]any) bool {
			return m["route"] == "refuse_tls12" && m["server_name"] == "site.example.com" && m["max_version"] == "tls1.2"
		})
	})

	t.Run("trailing dot on Caddy's own name", func(t *testing.T) {
		before := fallback.accepted.Load()
		typ, alert := ptSendHello(t, front, hellotest.WithSNI(t, hellotest.Go(t, &tls.Config{ServerName: "placeholder.example.com"}), "Site.Example.Com."))
		// Caddy's TLS server refuses a trailing dot in SNI (RFC 6066)
		if typ != 21 || fallback.accepted.Load() != before {
			t.Fatalf("got record type %d (alert %d), fallback accepted %d; want Caddy's own alert", typ, alert, fallback.accepted.Load()-before)
		}
	})
}

// TestPassthroughTrailingDotRefused: a refuse route for admin.internal
// (caddy-l4 routes with the suite's clienthello matcher and refuse
// handler) refuses "admin.internal." too, which fell to the catch-all
// route (whose backend answered; here it never does); "db.example.com."
// reaches db.example.com's backend.
func TestPassthroughTrailingDotRefused(t *testing.T) {
	ca := testpki.NewCA(t, "backend CA")
	db := ptStartBackend(t, ca, "db.example.com", ptBackendOpts{})
	fallback := ptStartBackend(t, ca, "fallback.example.com", ptBackendOpts{})
	l4 := bench.FreeAddr(t)
	c := bench.Start(t, `{
	admin {$TL_ADMIN}
	skip_install_trust
	layer4 {
		`+l4+` {
			@admin clienthello admin.internal
			route @admin {
				refuse unrecognized_name
			}
			@db clienthello db.example.com
			route @db {
				passthrough `+db.addr+`
			}
			route {
				passthrough `+fallback.addr+`
			}
		}
	}
}
`)
	bench.WaitPort(t, l4, 10*time.Second)
	// the refuse handler's alert (112) is the proof: the catch-all's
	// backend would answer a trailing dot with its own decode_error (50)
	for _, name := range []string{"admin.internal.", "Admin.Internal.", "admin.internal"} {
		typ, alert := ptSendHello(t, l4, hellotest.WithSNI(t, hellotest.Go(t, &tls.Config{ServerName: "placeholder.example.com"}), name))
		if typ != 21 || alert != 112 {
			t.Fatalf("%q: got record type %d (alert %d), want the refuse route's unrecognized_name alert (112)", name, typ, alert)
		}
	}
	lines := ptWaitLogLines(t, c, "passthrough connection refused", 3, nil)
	for _, l := range lines {
		if l["server_name"] != "admin.internal" {
			t.Fatalf("refusal logged with server name %v, want admin.internal", l["server_name"])
		}
	}
	_, _ = ptSendHello(t, l4, hellotest.WithSNI(t, hellotest.Go(t, &tls.Config{ServerName: "placeholder.example.com"}), "db.example.com."))
	if db.accepted.Load() != 1 {
		t.Fatalf("db.example.com.: db accepted %d connections, want 1", db.accepted.Load())
	}
	// and a real client for the name still gets through
	tc, _ := ptDial(t, l4, "db.example.com", &tls.Config{RootCAs: ca.Pool()})
	if got, _ := io.ReadAll(tc); !strings.HasPrefix(string(got), "backend:db.example.com") {
		t.Fatalf("got %q", got)
	}
}
