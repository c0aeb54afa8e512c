package passthrough

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"

	"github.com/trustline/trustline/internal/testpki"
	_ "github.com/trustline/trustline/modules/keystore"
)

// The re-encryption bench: a test handler terminates the client's mTLS
// as caddy-l4's tls handler does (Caddy's tls app is not needed for it),
// then the passthrough handler re-encrypts to a backend that requires a
// client certificate and answers with the serial it got.

func init() {
	caddy.RegisterModule(new(testTerminate))
}

// testTerminate terminates TLS at layer 4 with a certificate for
// l4.example.com, requiring a client certificate from the test CA, and
// records the connection state where l4tls.GetConnectionStates reads it.
type testTerminate struct{ cfg *tls.Config }

var l4Leaf = sync.OnceValue(func() *testpki.Leaf {
	return testCA().Issue(new(testing.T), testpki.CN("l4.example.com"), testpki.DNS("l4.example.com"), testpki.ServerOnly())
})

func (*testTerminate) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "layer4.handlers.test_terminate", New: func() caddy.Module { return new(testTerminate) }}
}

func (h *testTerminate) Provision(caddy.Context) error {
	h.cfg = &tls.Config{Certificates: []tls.Certificate{l4Leaf().TLS()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: testCA().Pool()}
	return nil
}

func (h *testTerminate) Handle(cx *layer4.Connection, next layer4.Handler) error {
	tc := tls.Server(cx, h.cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	cs := tc.ConnectionState()
	cx.SetVar("tls_connection_states", []*tls.ConnectionState{&cs})
	return next.Handle(cx.Wrap(tc))
}

// mtlsBackend requires a client certificate from clientCA; on each
// connection it writes "serial:<serial of the client certificate>\n",
// then echoes.
func mtlsBackend(t *testing.T, name string, clientCA *testpki.CA) string {
	t.Helper()
	leaf := testCA().Issue(t, testpki.CN(name), testpki.DNS(name), testpki.URI("spiffe://example.org/"+name), testpki.ServerOnly())
	return testpki.ClientSerialServer(t, leaf, clientCA)
}

// reencFront serves the terminate + passthrough route with the given
// handler JSON (upstream and tls set by the caller).
func reencFront(t *testing.T, handler map[string]any) *front {
	t.Helper()
	handler["handler"] = "passthrough"
	handler["route"] = "reenc"
	route := map[string]any{"handle": []any{map[string]any{"handler": "test_terminate"}, handler}}
	raw, _ := json.Marshal(map[string]any{"routes": []any{route}})
	return startFront(t, string(raw))
}

// alice is the client's own certificate (the layer-4 termination
// verifies it).
var alice = sync.OnceValue(func() tls.Certificate {
	return testCA().Issue(new(testing.T), testpki.CN("alice"), testpki.ClientOnly()).TLS()
})

// serialThrough connects as alice, returns the serial the backend saw
// and the open connection.
func serialThrough(t *testing.T, addr string) (string, *tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(raw, &tls.Config{ServerName: "l4.example.com", RootCAs: testCA().Pool(), Certificates: []tls.Certificate{alice()}})
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		tc.Close()
		return "", nil, err
	}
	t.Cleanup(func() { tc.Close() })
	return strings.TrimSpace(strings.TrimPrefix(line, "serial:")), tc, nil
}

func pemIdentity(t *testing.T, dir string, leaf *testpki.Leaf) map[string]any {
	t.Helper()
	cert := testpki.WriteFile(t, dir, "proxy.crt", leaf.CertPEM())
	key := testpki.WriteFile(t, dir, "proxy.key", leaf.KeyPEM())
	return map[string]any{"source": "pem", "certificate": cert, "key": key}
}

// TestReencryptRotation: the keystore identity is read per new upstream
// connection; after a rotation the session cache is dropped (a resumed
// session would carry the old certificate), so the next connection
// presents the new one, while an open connection keeps its own.
func TestReencryptRotation(t *testing.T) {
	logs := observeLogs(t)
	dir := t.TempDir()
	backend := mtlsBackend(t, "db.internal", testCA())
	one := testCA().Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	testpki.SetPool("rotation", testCA().Pool())
	f := reencFront(t, map[string]any{
		"upstreams": []any{map[string]any{"dial": backend}},
		"tls": map[string]any{"client_identity": pemIdentity(t, dir, one), "server_name": "db.internal",
			"ca": map[string]any{"provider": "testpki_swappable", "name": "rotation"}},
	})
	want1 := one.Cert.SerialNumber.String()
	got, open, err := serialThrough(t, f.addr)
	if err != nil || got != want1 {
		t.Fatalf("first connection: backend saw %q (%v), want %s", got, err, want1)
	}
	// a second connection resumes the upstream session: same identity
	if got, _, err := serialThrough(t, f.addr); err != nil || got != want1 {
		t.Fatalf("second connection: %q, %v", got, err)
	}

	two := testCA().Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	testpki.WriteFile(t, dir, "proxy.key", two.KeyPEM())
	testpki.WriteFile(t, dir, "proxy.crt", two.CertPEM())
	waitFor(t, "the sessions renewed after the rotation", func() bool {
		return len(logsWith(logs, "upstream TLS sessions renewed: new connections present the current identity, open ones keep theirs")) > 0
	})
	if got, _, err := serialThrough(t, f.addr); err != nil || got != two.Cert.SerialNumber.String() {
		t.Fatalf("after the rotation the backend saw %q (%v), want the new serial %s", got, err, two.Cert.SerialNumber)
	}
	// the connection opened before the rotation goes on with its own
	echo(t, open, "still here")
	l := logsWith(logs, "upstream TLS sessions renewed: new connections present the current identity, open ones keep theirs")[0]
	if l["cause"] != "client identity rotated" || !strings.Contains(fmt.Sprint(l["client_identity"]), two.Cert.SerialNumber.Text(16)) {
		t.Fatalf("renewal log %v", l)
	}
	ready := logsWith(logs, "upstream TLS ready")
	if len(ready) != 1 || ready[0]["live_trust_pool"] != true || ready[0]["client_identity_source"] == nil {
		t.Fatalf("ready log %v", ready)
	}
}

// TestReencryptLiveTrustPool: the trust pool is asked at each handshake,
// resumed ones included; a backend outside it is refused with the reason.
func TestReencryptLiveTrustPool(t *testing.T) {
	logs := observeLogs(t)
	dir := t.TempDir()
	backend := mtlsBackend(t, "db.internal", testCA())
	proxy := testCA().Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	foreign := testpki.NewCA(t, "foreign")
	testpki.SetPool("pool", foreign.Pool())
	f := reencFront(t, map[string]any{
		"upstreams": []any{map[string]any{"dial": backend}},
		"tls": map[string]any{"client_identity": pemIdentity(t, dir, proxy), "server_name": "db.internal",
			"ca": map[string]any{"provider": "testpki_swappable", "name": "pool"}},
	})
	refused := func(when string) {
		t.Helper()
		n := len(logsWith(logs, "upstream TLS handshake failed"))
		if got, _, err := serialThrough(t, f.addr); err == nil {
			t.Fatalf("%s: a backend outside the trust pool was reached (serial %s)", when, got)
		}
		waitFor(t, "the failure log", func() bool { return len(logsWith(logs, "upstream TLS handshake failed")) > n })
		l := logsWith(logs, "upstream TLS handshake failed")[n]
		if l["reason"] != "unknown_authority" || l["upstream"] != backend || l["route"] != "reenc" || l["server_name"] != "db.internal" {
			t.Fatalf("%s: failure log %v", when, l)
		}
	}
	refused("foreign pool")
	conns := logsWith(logs, "passthrough connection")
	if len(conns) == 0 || conns[len(conns)-1]["close_reason"] != "dial_failed" || !strings.Contains(fmt.Sprint(conns[len(conns)-1]["error"]), "unknown_authority") {
		t.Fatalf("connection log %v", conns)
	}

	testpki.SetPool("pool", testCA().Pool())
	if got, _, err := serialThrough(t, f.addr); err != nil || got != proxy.Cert.SerialNumber.String() {
		t.Fatalf("after the pool gained the backend's CA: %q, %v", got, err)
	}
	// the next connection would resume that session: verification runs
	// on resumption too
	testpki.SetPool("pool", foreign.Pool())
	refused("resumed session, foreign pool")
	testpki.SetPool("pool", nil)
	refused("empty live pool")
}

// TestReencryptFailures: a pinned identity the backend does not hold, and
// a backend that refuses our certificate after the TLS 1.3 handshake.
func TestReencryptFailures(t *testing.T) {
	logs := observeLogs(t)
	dir := t.TempDir()
	proxy := testCA().Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	caFile := testpki.WriteFile(t, dir, "ca.pem", testCA().CertPEM())
	trust := map[string]any{"provider": "file", "pem_files": []string{caFile}}

	t.Run("pinned identity", func(t *testing.T) {
		backend := mtlsBackend(t, "db.internal", testCA())
		f := reencFront(t, map[string]any{"upstreams": []any{map[string]any{"dial": backend}},
			"tls": map[string]any{"client_identity": pemIdentity(t, dir, proxy), "ca": trust, "upstream_identity": []string{"spiffe://example.org/other"}}})
		if _, _, err := serialThrough(t, f.addr); err == nil {
			t.Fatal("reached a backend without the pinned identity")
		}
		waitFor(t, "the failure log", func() bool { return len(logsWith(logs, "upstream TLS handshake failed")) > 0 })
		if l := logsWith(logs, "upstream TLS handshake failed")[0]; l["reason"] != "identity_mismatch" {
			t.Fatalf("failure log %v", l)
		}
		// the right pin stands in for the server name (an IP address here)
		f = reencFront(t, map[string]any{"upstreams": []any{map[string]any{"dial": backend}},
			"tls": map[string]any{"client_identity": pemIdentity(t, dir, proxy), "ca": trust, "upstream_identity": []string{"spiffe://example.org/db.internal"}}})
		if got, _, err := serialThrough(t, f.addr); err != nil || got != proxy.Cert.SerialNumber.String() {
			t.Fatalf("pinned SPIFFE ID: %q, %v", got, err)
		}
	})
	t.Run("backend refuses our certificate", func(t *testing.T) {
		backend := mtlsBackend(t, "db.internal", testpki.NewCA(t, "other clients"))
		f := reencFront(t, map[string]any{"upstreams": []any{map[string]any{"dial": backend}},
			"tls": map[string]any{"client_identity": pemIdentity(t, dir, proxy), "ca": trust, "server_name": "db.internal"}})
		n := len(logsWith(logs, "upstream TLS handshake failed"))
		if got, _, err := serialThrough(t, f.addr); err == nil {
			t.Fatalf("the backend accepted a certificate of a CA it does not trust (%s)", got)
		}
		waitFor(t, "the refusal log", func() bool { return len(logsWith(logs, "upstream TLS handshake failed")) > n })
		l := logsWith(logs, "upstream TLS handshake failed")[n]
		if l["reason"] != "bad_certificate" || l["alert"] == nil || !strings.Contains(fmt.Sprint(l["client_identity"]), proxy.Cert.SerialNumber.Text(16)) {
			t.Fatalf("refusal log %v", l)
		}
	})
}

func TestReencryptProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	proxy := testCA().Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	serverOnly := testCA().Issue(t, testpki.CN("server"), testpki.ServerOnly())
	id := pemIdentity(t, dir, proxy)
	sc := testpki.WriteFile(t, dir, "s.crt", serverOnly.CertPEM())
	sk := testpki.WriteFile(t, dir, "s.key", serverOnly.KeyPEM())
	for _, tc := range []struct {
		name string
		tls  map[string]any
		want string
	}{
		{"identity and tls_client_auth", map[string]any{"client_identity": id, "client_certificate_file": "/a", "client_certificate_key_file": "/b"}, "client_identity and tls_client_auth both set"},
		{"bad pin", map[string]any{"upstream_identity": []string{"https://db"}}, `upstream_identity "https://db"`},
		{"pin without verification", map[string]any{"upstream_identity": []string{"db.internal"}, "insecure_skip_verify": true}, "upstream_identity needs verification"},
		{"missing keystore", map[string]any{"client_identity": map[string]any{"source": "pem", "certificate": dir + "/none.crt", "key": dir + "/none.key"}}, "client_identity"},
		{"identity without clientAuth", map[string]any{"client_identity": map[string]any{"source": "pem", "certificate": sc, "key": sk}}, "lacks the clientAuth extended key usage"},
		{"unknown trust pool", map[string]any{"ca": map[string]any{"provider": "nope"}}, "trust_pool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, _ := newTestContext(t)
			raw, _ := json.Marshal(map[string]any{"route": "r", "upstreams": []any{map[string]any{"dial": "127.0.0.1:1"}}, "tls": tc.tls})
			_, err := ctx.LoadModuleByID("layer4.handlers.passthrough", raw)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `route "r": tls:`) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestUnmarshalUpstreamTLS(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want: JSON of the tls field, or "error: ..."
	}{
		{"block", `passthrough 10.0.0.5:5432 {
			tls {
				client_identity pkcs12 /etc/proxy.p12 {
					password {env.P12}
				}
				upstream_identity spiffe://example.org/db db.internal
				trust_pool file /etc/ca.pem
				server_name db.internal
			}
		}`, `{"ca":{"pem_files":["/etc/ca.pem"],"provider":"file"},"server_name":"db.internal","client_identity":{"password":"{env.P12}","path":"/etc/proxy.p12","source":"pkcs12"},"upstream_identity":["spiffe://example.org/db","db.internal"]}`},
		{"flat options", `passthrough 10.0.0.5:5432 {
			tls
			tls_server_name db.internal
			tls_client_auth /c.pem /k.pem
		}`, `{"client_certificate_file":"/c.pem","client_certificate_key_file":"/k.pem","server_name":"db.internal"}`},
		{"block and flat", `passthrough 10.0.0.5:5432 {
			tls {
				client_identity pem /c.pem /k.pem
			}
			tls_trust_pool file /ca.pem
		}`, `{"ca":{"pem_files":["/ca.pem"],"provider":"file"},"client_identity":{"certificate":"/c.pem","key":"/k.pem","source":"pem"}}`},
		{"identity and client auth", "passthrough 10.0.0.5:5432 {\ntls {\nclient_identity pem /c.pem /k.pem\n}\ntls_client_auth /a /b\n}", "error: client_identity and tls_client_auth both set"},
		{"server name twice", "passthrough 10.0.0.5:5432 {\ntls {\nserver_name a\n}\ntls_server_name b\n}", "error: server_name given twice (as tls server_name and as tls_server_name)"},
		{"trust pool twice", "passthrough 10.0.0.5:5432 {\ntls_trust_pool file /a\ntls {\ntrust_pool file /b\n}\n}", "error: trust_pool given twice"},
		{"duplicate in block", "passthrough 10.0.0.5:5432 {\ntls {\nupstream_identity a.test\nupstream_identity b.test\n}\n}", "error: duplicate option 'upstream_identity'"},
		{"unknown option", "passthrough 10.0.0.5:5432 {\ntls {\nclient_auth /a /b\n}\n}", "error: passthrough: tls: unknown option 'client_auth'"},
		{"unknown source", "passthrough 10.0.0.5:5432 {\ntls {\nclient_identity p13 /x\n}\n}", "error: unknown keystore source 'p13'"},
		{"no source", "passthrough 10.0.0.5:5432 {\ntls {\nclient_identity\n}\n}", "error: client_identity: expected a keystore source"},
		{"bad pin", "passthrough 10.0.0.5:5432 {\ntls {\nupstream_identity https://db\n}\n}", `error: upstream_identity "https://db"`},
		{"empty pins", "passthrough 10.0.0.5:5432 {\ntls {\nupstream_identity\n}\n}", "error: upstream_identity needs at least one"},
		{"no trust pool source", "passthrough 10.0.0.5:5432 {\ntls {\ntrust_pool\n}\n}", "error: passthrough: tls: trust_pool: expected a trust pool source (bundle, "},
		{"unknown trust pool", "passthrough 10.0.0.5:5432 {\ntls {\ntrust_pool nope /a\n}\n}", "error: unknown trust pool source 'nope'"},
		{"tls argument", "passthrough 10.0.0.5:5432 {\ntls on\n}", "error: tls takes no argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
			if want, isErr := strings.CutPrefix(tc.want, "error: "); isErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(h.TLS)
			if string(got) != tc.want {
				t.Fatalf("tls JSON\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestReencryptStalledUpstream: an upstream that accepts the connection
// and never answers the ClientHello fails the dial at dial_timeout, with
// the reason timeout in the failure line; the handshake does not hang.
func TestReencryptStalledUpstream(t *testing.T) {
	logs := observeLogs(t)
	dir := t.TempDir()
	proxy := testCA().Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	caFile := testpki.WriteFile(t, dir, "ca.pem", testCA().CertPEM())
	f := reencFront(t, map[string]any{"upstreams": []any{map[string]any{"dial": testpki.StalledServer(t)}},
		"dial_timeout": int64(300 * time.Millisecond),
		"tls": map[string]any{"client_identity": pemIdentity(t, dir, proxy), "server_name": "db.internal",
			"ca": map[string]any{"provider": "file", "pem_files": []string{caFile}}}})
	start := time.Now()
	if _, _, err := serialThrough(t, f.addr); err == nil {
		t.Fatal("reached an upstream that never answers")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the connection ended after %s, with dial_timeout 300ms", took)
	}
	waitFor(t, "the failure log", func() bool { return len(logsWith(logs, "upstream TLS handshake failed")) > 0 })
	if l := logsWith(logs, "upstream TLS handshake failed")[0]; l["reason"] != "timeout" {
		t.Fatalf("failure log %v", l)
	}
}
