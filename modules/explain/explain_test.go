package explain_test

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/trustline/trustline"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/explain"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// pki is the test PKI: a root, an issuing intermediate, a server
// certificate and clients.
type pki struct {
	dir              string
	root, inter      *testpki.CA
	rootFile, crl    string
	srvCert, srvKey  string
	alice, bob, gone *testpki.Leaf
}

func newPKI(t *testing.T) *pki {
	p := &pki{dir: t.TempDir()}
	p.root = testpki.NewCA(t, "Explain Root")
	p.inter = p.root.NewIntermediate(t, "Explain Issuing CA")
	p.rootFile = testpki.WriteFile(t, p.dir, "root.pem", p.root.CertPEM())
	srv := p.inter.Issue(t, testpki.CN("localhost"), testpki.DNS("localhost"), testpki.ServerOnly())
	p.srvCert, p.srvKey = srv.WriteFiles(t, p.dir, "server")
	p.alice = p.inter.Issue(t, testpki.CN("alice"), testpki.URI("spiffe://example.org/ops/alice"), testpki.ClientOnly())
	p.bob = p.inter.Issue(t, testpki.CN("bob"), testpki.URI("spiffe://example.org/dev/bob"), testpki.ClientOnly())
	p.gone = p.inter.Issue(t, testpki.CN("gone"), testpki.URI("spiffe://example.org/ops/gone"), testpki.ClientOnly())
	p.crl = testpki.WriteFile(t, p.dir, "crl.pem", revocationtest.PEM(revocationtest.CRL(t, p.inter, time.Now().Add(time.Hour), p.gone.Cert)))
	return p
}

// adapt adapts a Caddyfile to JSON.
func adapt(t *testing.T, caddyfile string) []byte {
	t.Helper()
	cfg, warns, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	for _, w := range warns {
		t.Logf("adapt warning: %v", w)
	}
	return cfg
}

func chainPEM(certs ...*x509.Certificate) string { return string(testpki.CertsPEM(certs...)) }

func request(t *testing.T, v map[string]any) *explain.Request {
	t.Helper()
	body, _ := json.Marshal(v)
	r, err := explain.ParseRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestExplainLiveTrustSite runs the engine in-process on a live_trust
// site with a CRL, a peer_authorize route and forward_peer_identity: the
// verdicts of the agreement test (integration/explain_test.go), quicker.
func TestExplainLiveTrustSite(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	p := newPKI(t)
	cfg := adapt(t, fmt.Sprintf(`{
	admin off
	auto_https disable_redirects
}
https://localhost:8443 {
	tls %s %s {
		client_auth {
			verifier live_trust bundle %s
			verifier peer {
				crl %s
			}
		}
	}
	route /admin* {
		peer_authorize spiffe://example.org/ops/*
		respond "admin"
	}
	forward_peer_identity
	reverse_proxy 127.0.0.1:9
}
`, p.srvCert, p.srvKey, p.rootFile, p.crl))
	cases := []struct {
		name    string
		chain   string
		path    string
		outcome string
		reason  string
	}{
		{"admitted", chainPEM(p.alice.Cert, p.inter.Cert), "/admin", explain.OutcomeAdmitted, ""},
		{"no certificate", "", "/", explain.OutcomeRefusedHandshake, "no_certificate"},
		{"intermediate not sent", chainPEM(p.alice.Cert), "/", explain.OutcomeRefusedHandshake, "unknown_authority"},
		{"revoked", chainPEM(p.gone.Cert, p.inter.Cert), "/", explain.OutcomeRefusedHandshake, "revoked"},
		{"403", chainPEM(p.bob.Cert, p.inter.Cert), "/admin", explain.OutcomeRefusedHTTP, "not_allowed"},
		{"proxied", chainPEM(p.bob.Cert, p.inter.Cert), "/", explain.OutcomeAdmitted, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := explain.Offline(cfg, request(t, map[string]any{"server_name": "localhost", "chain": tc.chain, "path": tc.path}), "test")
			if err != nil {
				t.Fatal(err)
			}
			if rep.Verdict.Outcome != tc.outcome || rep.Verdict.Reason != tc.reason {
				var b strings.Builder
				_ = rep.WriteTable(&b)
				t.Errorf("verdict %+v, want %s %s\n%s", rep.Verdict, tc.outcome, tc.reason, b.String())
			}
		})
	}
}
