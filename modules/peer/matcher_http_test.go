package peer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/trustline/trustline/internal/testpki"
)

func TestMatchPeerCaddyfile(t *testing.T) {
	cases := []struct {
		in   string
		want Patterns
		err  string
	}{
		{in: `peer spiffe://example.org/ops/*`, want: Patterns{SPIFFEID: []string{"spiffe://example.org/ops/*"}}},
		{in: `peer spiffe://example.org/a dns:*.svc ip:10.0.0.0/8 sha256:` + strings.Repeat("ab", 32) + ` cn:web o:Acme ou:ops issuer:CN=root subject:CN=web uri:https://x/** email:*@x.org trust_domain:example.org spki:` + strings.Repeat("cd", 32),
			want: Patterns{SPIFFEID: []string{"spiffe://example.org/a"}, DNS: []string{"*.svc"}, IP: []string{"10.0.0.0/8"},
				Fingerprint: []string{strings.Repeat("ab", 32)}, CommonName: []string{"web"}, Organization: []string{"Acme"},
				OrganizationalUnit: []string{"ops"}, Issuer: []string{"CN=root"}, Subject: []string{"CN=web"}, URI: []string{"https://x/**"},
				Email: []string{"*@x.org"}, TrustDomain: []string{"example.org"}, SPKI: []string{strings.Repeat("cd", 32)}}},
		{in: "peer {\n spiffe_id spiffe://example.org/a spiffe://example.org/b\n dns a.example.com\n dns b.example.com\n subject \"CN=web, O=Acme\"\n}",
			want: Patterns{SPIFFEID: []string{"spiffe://example.org/a", "spiffe://example.org/b"}, DNS: []string{"a.example.com", "b.example.com"}, Subject: []string{"CN=web, O=Acme"}}},
		{in: "peer spiffe://example.org/a\npeer dns:x.example.com", want: Patterns{SPIFFEID: []string{"spiffe://example.org/a"}, DNS: []string{"x.example.com"}}},
		{in: `peer`, err: "peer: no identity pattern given"},
		{in: `peer {` + "\n}", err: "peer: no identity pattern given"},
		{in: `peer web.example.com`, err: `peer: unknown pattern "web.example.com": write a SPIFFE ID`},
		{in: `peer dns:`, err: `peer: empty dns pattern`},
		{in: `peer host:x`, err: `unknown pattern "host:x"`},
		{in: "peer {\n host x\n}", err: `peer: unknown option "host" (expected one of: spiffe_id`},
		{in: "peer {\n dns\n}", err: `peer: dns needs at least one pattern`},
		{in: `peer spiffe://example.org`, err: `peer: spiffe_id "spiffe://example.org": names a trust domain, not a workload; to match every ID in it write "spiffe://example.org/**"`},
		{in: `peer spiffe://EXAMPLE.org/x`, err: `trust domain characters are limited`},
		{in: `peer spiffe:/example.org/x`, err: `peer: spiffe_id "spiffe:/example.org/x"`},
		{in: `peer sha256:abc`, err: `peer: fingerprint "abc": odd number of hex digits`},
		{in: `peer spki:xyz0`, err: `peer: spki "xyz0": 'x' is not a hex digit`},
		{in: `peer ip:300.1.1.1`, err: `peer: ip "300.1.1.1"`},
		{in: `peer dns:[bad]`, err: `peer: dns "[bad]": '[' is not allowed in a DNS name`},
		{in: `peer spiffe://example.org/a/**/b/**`, err: `"**" may appear only once`},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			var m MatchPeer
			err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m.Patterns.c = nil
			if !reflect.DeepEqual(m.Patterns, c.want) {
				t.Fatalf("got %+v\nwant %+v", m.Patterns, c.want)
			}
		})
	}
}

// caddyRequest builds a request as Caddy's server prepares it (replacer,
// vars, extra log fields), with the given TLS state.
func caddyRequest(t testing.TB, cs *tls.ConnectionState) (*http.Request, *caddy.Replacer) {
	r := httptest.NewRequest("GET", "https://example.com/", nil)
	r.TLS = cs
	repl := caddy.NewReplacer()
	r = caddyhttp.PrepareRequest(r, repl, httptest.NewRecorder(), &caddyhttp.Server{})
	return r, repl
}

func provisioned[T caddy.Provisioner](t testing.TB, m T) T {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := m.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMatchPeerRequests(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.URI("spiffe://example.org/ops/alice"), testpki.DNS("alice.example.org")).Cert
	other := ca.Issue(t, testpki.URI("spiffe://example.org/dev/bob")).Cert
	verified := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c, ca.Cert}}}
	}
	m := provisioned(t, &MatchPeer{Patterns: Patterns{SPIFFEID: []string{"spiffe://example.org/ops/*"}}})
	cases := []struct {
		name string
		cs   *tls.ConnectionState
		want bool
	}{
		{"verified allowed", verified(leaf), true},
		{"verified other path", verified(other), false},
		{"plain http", nil, false},
		{"no client cert", &tls.ConnectionState{}, false},
		{"presented, not verified", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, repl := caddyRequest(t, c.cs)
			got, err := m.MatchWithError(r)
			if err != nil || got != c.want {
				t.Fatalf("got %v, %v; want %v", got, err, c.want)
			}
			// under `not`, the opposite, including the unverified cases
			not := &caddyhttp.MatchNot{MatcherSets: []caddyhttp.MatcherSet{{m}}}
			if got, _ := not.MatchWithError(r); got == c.want {
				t.Fatalf("not: got %v", got)
			}
			// placeholders describe only a verified identity
			wantID := ""
			if c.want {
				wantID = "spiffe://example.org/ops/alice"
			}
			if got := repl.ReplaceKnown("{peer.spiffe_id}", ""); got != wantID && !(c.name == "verified other path" && got == "spiffe://example.org/dev/bob") {
				t.Fatalf("{peer.spiffe_id} = %q", got)
			}
		})
	}
}

func TestPlaceholders(t *testing.T) {
	root := testpki.NewCA(t, "Root")
	inter := root.NewIntermediate(t, "Issuing")
	leaf := inter.Issue(t, testpki.CN("web"), testpki.Org("Acme"), testpki.OU("a", "b"),
		testpki.URI("spiffe://example.org/ns/prod/sa/web"), testpki.DNS("web.example.org", "api.example.org"),
		testpki.Email("ops@example.org"), testpki.IP("10.0.0.1")).Cert
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, inter.Cert}, VerifiedChains: [][]*x509.Certificate{{leaf, inter.Cert, root.Cert}}}
	r, repl := caddyRequest(t, cs)
	id := publish(r)
	want := map[string]string{
		"{peer.verified}":          "true",
		"{peer.presented}":         "true",
		"{peer.spiffe_id}":         "spiffe://example.org/ns/prod/sa/web",
		"{peer.trust_domain}":      "example.org",
		"{peer.spiffe_path}":       "/ns/prod/sa/web",
		"{peer.fingerprint}":       id.FingerprintHex,
		"{peer.spki}":              id.SPKIHex,
		"{peer.subject}":           "CN=web,OU=a+OU=b,O=Acme",
		"{peer.subject.cn}":        "web",
		"{peer.subject.o}":         "Acme",
		"{peer.subject.ou}":        "a,b",
		"{peer.issuer}":            "CN=Issuing",
		"{peer.issuer.cn}":         "Issuing",
		"{peer.serial}":            leaf.SerialNumber.Text(16),
		"{peer.dns}":               "web.example.org,api.example.org",
		"{peer.dns.1}":             "api.example.org",
		"{peer.dns.7}":             "",
		"{peer.uri.0}":             "spiffe://example.org/ns/prod/sa/web",
		"{peer.email}":             "ops@example.org",
		"{peer.ip}":                "10.0.0.1",
		"{peer.not_after}":         leaf.NotAfter.UTC().Format("2006-01-02T15:04:05Z07:00"),
		"{peer.client_cert}":       ":" + b64(leaf.Raw) + ":",
		"{peer.client_cert_chain}": ":" + b64(inter.Cert.Raw) + ":, :" + b64(root.Cert.Raw) + ":",
		"{peer.nope}":              "{peer.nope}",
	}
	for in, w := range want {
		if got := repl.ReplaceKnown(in, ""); got != w {
			t.Errorf("%s = %q, want %q", in, got, w)
		}
	}
	if got := repl.ReplaceAll("{peer.cert_pem_escaped}", ""); !strings.HasPrefix(got, "-----BEGIN%20CERTIFICATE-----%0A") || strings.ContainsAny(got, "+/=\n ") {
		t.Errorf("cert_pem_escaped = %q", got)
	}

	// an unverified certificate: everything empty but verified/presented
	r, repl = caddyRequest(t, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
	publish(r)
	for in, w := range map[string]string{"{peer.verified}": "false", "{peer.presented}": "true", "{peer.spiffe_id}": "", "{peer.subject}": "", "{peer.dns.0}": "", "{peer.client_cert}": ""} {
		if got := repl.ReplaceKnown(in, ""); got != w {
			t.Errorf("unverified: %s = %q, want %q", in, got, w)
		}
	}
}

func TestLogIdentity(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.URI("spiffe://example.org/a")).Cert
	two := ca.Issue(t, testpki.URI("spiffe://example.org/a", "spiffe://example.org/b")).Cert
	enc := func(l zapcore.ObjectMarshaler) string {
		e := zapcore.NewJSONEncoder(zapcore.EncoderConfig{})
		buf, err := e.EncodeEntry(zapcore.Entry{}, []zapcore.Field{zap.Object("peer", l)})
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(buf.String())
	}
	if got := enc(NewIdentity(leaf, nil)); !strings.HasPrefix(got, `{"peer":{"verified":true,"spiffe_id":"spiffe://example.org/a","subject":"CN=leaf","issuer":"CN=root","serial":"`) {
		t.Fatalf("verified: %s", got)
	}
	if got := enc(NewIdentity(two, nil)); !strings.Contains(got, `"spiffe_id_rejected":"not a SPIFFE ID: certificate contains more than one URI SAN"`) {
		t.Fatalf("two URIs: %s", got)
	}
	if got := enc(logUnverified{presented: true}); got != `{"peer":{"verified":false,"presented":true}}` {
		t.Fatalf("unverified: %s", got)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
