package passthrough

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/hellotest"
)

// Routing decisions on ClientHellos in unusual shapes (small records, a
// trailing dot in the server name, an unknown version beside TLS 1.2),
// through caddy-l4's real listener wrapper.

// sendHello writes a raw first flight to addr and returns the type of the
// first record that comes back, and the alert code when it is an alert.
func sendHello(t *testing.T, addr string, data []byte) (recType, alert byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 7)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("no answer to the ClientHello: %v", err)
	}
	if hdr[0] == 21 {
		return 21, hdr[6]
	}
	return hdr[0], 0
}

// TestRoutesSmallRecords: a ClientHello in records of 20 bytes (about 80
// of them, which the former 64-record cap sent to the default route) or
// of one byte reaches the route for its name, not the default.
func TestRoutesSmallRecords(t *testing.T) {
	db := startBackend(t, "db.example.com")
	other := startBackend(t, "other.example.com")
	f := startFront(t, suiteWrapper(t, "db.example.com", db.addr, other.addr))
	for _, s := range []shape{
		{recordSize: 20},
		{recordSize: 20, segment: 100, pause: time.Millisecond},
		{recordSize: 1},
	} {
		t.Run(fmt.Sprintf("records of %d bytes, segments of %d", s.recordSize, s.segment), func(t *testing.T) {
			body, cn, err := fetch(t, f.addr, "db.example.com", s, nil)
			if err != nil || body != "backend:db.example.com" {
				t.Fatalf("got %q from %q (%v), want backend:db.example.com", body, cn, err)
			}
		})
	}
	if other.accepted.Load() != 0 {
		t.Fatalf("the default route took %d connections", other.accepted.Load())
	}
}

// TestTrailingDotSNIRouting: "admin.internal." is refused by the refuse
// route for admin.internal, and the other names with a trailing dot go
// where the names without it go, exact and wildcard. A name with two
// dots is malformed: it matches no route (here it falls through to the
// TLS server behind the wrapper, which refuses it).
func TestTrailingDotSNIRouting(t *testing.T) {
	db := startBackend(t, "db.example.com")
	wild := startBackend(t, "x.tenant.example")
	other := startBackend(t, "other.example.com")
	f := startFront(t, fmt.Sprintf(`{"routes":[
		{"match":[{"clienthello":{"sni":["admin.internal"]}}],"handle":[{"handler":"refuse","route":"admin","alert":"unrecognized_name"}]},
		{"match":[{"clienthello":{"sni":["db.example.com"]}}],"handle":[{"handler":"passthrough","upstreams":[{"dial":%q}]}]},
		{"match":[{"clienthello":{"sni":["*.tenant.example"]}}],"handle":[{"handler":"passthrough","upstreams":[{"dial":%q}]}]},
		{"match":[{"clienthello":{}}],"handle":[{"handler":"passthrough","upstreams":[{"dial":%q}]}]}]}`,
		db.addr, wild.addr, other.addr))
	raw := hellotest.Go(t, &tls.Config{ServerName: "placeholder.example.com"})
	backends := []*backend{db, wild, other}
	for _, tc := range []struct {
		sni  string
		want *backend // nil: refused
	}{
		{"admin.internal.", nil},
		{"ADMIN.Internal.", nil},
		{"admin.internal", nil},
		{"db.example.com.", db},
		{"DB.Example.Com.", db},
		{"x.tenant.example.", wild},
		{"admin.internal..", nil},
	} {
		t.Run(tc.sni, func(t *testing.T) {
			var before []int64
			for _, b := range backends {
				before = append(before, b.accepted.Load())
			}
			typ, alert := sendHello(t, f.addr, hellotest.WithSNI(t, raw, tc.sni))
			if tc.want == nil && !strings.HasSuffix(tc.sni, "..") && (typ != 21 || alert != 112) {
				t.Fatalf("got record type %d, alert %d; want the refuse route's unrecognized_name alert (112)", typ, alert)
			}
			for i, b := range backends {
				want := before[i]
				if b == tc.want {
					want++
				}
				if got := b.accepted.Load(); got != want {
					t.Fatalf("backend %s accepted %d connections, want %d", b.name, got-before[i], want-before[i])
				}
			}
		})
	}
}

// TestRefuseTLS12UnknownVersions: refuse_tls12 refuses a TLS 1.2 client
// whatever unknown or GREASE versions it lists beside TLS 1.2, and lets
// a TLS 1.3 client through whatever it lists beside TLS 1.3.
func TestRefuseTLS12UnknownVersions(t *testing.T) {
	logs := observeLogs(t)
	db := startBackend(t, "db.example.com")
	f := startFront(t, blockWrapper(t, "passthrough {\ndb.example.com "+db.addr+"\ndefault refuse\nrefuse_tls12\n}", true))
	raw := hellotest.Go(t, &tls.Config{ServerName: "db.example.com"})
	for _, tc := range []struct {
		name     string
		versions []uint16
		refused  bool
	}{
		{"unknown 0x0305 and TLS 1.2", []uint16{0x0305, tls.VersionTLS12}, true},
		{"GREASE and TLS 1.2", []uint16{0x2a2a, tls.VersionTLS12}, true},
		{"only unknown", []uint16{0x0305}, true},
		{"GREASE, unknown, TLS 1.3 and 1.2", []uint16{0x2a2a, 0x0305, tls.VersionTLS13, tls.VersionTLS12}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := db.accepted.Load()
			typ, alert := sendHello(t, f.addr, hellotest.WithVersions(t, raw, tc.versions...))
			if tc.refused {
				if typ != 21 || alert != 70 {
					t.Fatalf("got record type %d, alert %d; want refuse_tls12's protocol_version alert (70)", typ, alert)
				}
				if db.accepted.Load() != before {
					t.Fatal("the backend got the connection")
				}
				return
			}
			if typ != 22 || db.accepted.Load() != before+1 {
				t.Fatalf("got record type %d (alert %d), backend accepted %d; want the backend's ServerHello", typ, alert, db.accepted.Load()-before)
			}
		})
	}
	for _, l := range logsWith(logs, "passthrough connection refused") {
		if l["route"] != "refuse_tls12" || (l["max_version"] != "tls1.2" && l["max_version"] != "none") {
			t.Errorf("refusal logged as %v", l)
		}
	}
}
