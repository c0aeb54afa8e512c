package spiffeworkload

import (
	"crypto/x509"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/truststore"
)

// TestPoolScopedPerTrustDomain: the agent serves our bundle and a
// federated partner's. Through live_trust (the one verification path) the
// partner's own SVIDs verify, ours verify, and an SVID of our trust domain
// signed by the partner's CA is refused; so is a plain DNS certificate of
// the partner's CA. Every version of the bundles is scoped.
func TestPoolScopedPerTrustDomain(t *testing.T) {
	ours := testpki.NewCA(t, "example.org ca")
	partner := testpki.NewCA(t, "partner.test ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/proxy", ca: ours}}, map[string]*testpki.CA{"partner.test": partner})
	f.set(resp)

	lt := &truststore.LiveTrust{TrustPoolRaw: json.RawMessage(`{"provider":"spiffe_workload","socket":"` + f.addr + `"}`)}
	ctx := testCtx(t)
	if err := lt.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	raw := func(l *testpki.Leaf) [][]byte { return [][]byte{l.Cert.Raw} }
	check := func(what string, l *testpki.Leaf, wantErr string) {
		t.Helper()
		err := lt.VerifyClientCertificate(raw(l), nil)
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%s: refused: %v", what, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("%s: got %v, want an error containing %q", what, err, wantErr)
		}
	}
	check("our SVID", ours.Issue(t, testpki.URI("spiffe://example.org/web")), "")
	check("the partner's SVID", partner.Issue(t, testpki.URI("spiffe://partner.test/api")), "")
	check("our ID minted by the partner", partner.Issue(t, testpki.URI("spiffe://example.org/admin")), "an authority vouches only for its own trust domain")
	check("a DNS name from the partner's CA", partner.Issue(t, testpki.DNS("www.example.org")), "no X509-SVID")

	// a new version of the bundles (the partner's CA rotated) is scoped too
	partner2 := testpki.NewCA(t, "partner.test ca 2")
	resp, _ = answer(t, []svid{{id: "spiffe://example.org/proxy", ca: ours}}, map[string]*testpki.CA{"partner.test": partner2})
	f.set(resp)
	check2 := partner2.Issue(t, testpki.URI("spiffe://partner.test/api"))
	eventually(t, 5*time.Second, "the rotated partner bundle is in force", func() bool {
		return lt.VerifyClientCertificate(raw(check2), nil) == nil
	})
	check("our ID minted by the partner's new CA", partner2.Issue(t, testpki.URI("spiffe://example.org/admin")), "an authority vouches only for its own trust domain")
	check("the partner's old CA", partner.Issue(t, testpki.URI("spiffe://partner.test/api")), "unknown authority")
}

// TestPoolTrustDomains: trust_domains keeps only the listed bundles; one
// the agent does not serve fails the load with what it serves; a later
// answer without it is refused and the last good pool stays.
func TestPoolTrustDomains(t *testing.T) {
	ours := testpki.NewCA(t, "example.org ca")
	partner := testpki.NewCA(t, "partner.test ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/proxy", ca: ours}}, map[string]*testpki.CA{"partner.test": partner})
	f.set(resp)
	ctx := testCtx(t)

	p := &Pool{Agent: Agent{Socket: f.addr}, TrustDomains: []string{"partner.test"}}
	if err := p.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Cleanup()
	if certs := p.Certificates(); len(certs) != 1 || !certs[0].Equal(partner.Cert) {
		t.Fatalf("pool holds %d certificates, want the partner's CA only", len(certs))
	}
	if tds := p.CurrentAnchors().TrustDomains(); !slices.Equal(tds, []string{"partner.test"}) {
		t.Fatalf("version scoped to %v", tds)
	}
	if _, err := ours.Issue(t, testpki.URI("spiffe://example.org/a")).Cert.Verify(x509.VerifyOptions{Roots: p.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Fatal("our own CA is in a pool limited to partner.test")
	}

	q := &Pool{Agent: Agent{Socket: f.addr}, TrustDomains: []string{"example.org", "other.test"}}
	err := q.Provision(ctx)
	q.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "no bundle for trust domain other.test (the agent serves: example.org, partner.test)") {
		t.Fatalf("got %v", err)
	}

	// the partner's bundle goes away: refused, the last good pool stays
	resp, _ = answer(t, []svid{{id: "spiffe://example.org/proxy", ca: ours}}, nil)
	f.set(resp)
	eventually(t, 5*time.Second, "the agent's answer without partner.test arrives", func() bool {
		return len(p.agent.current.Load().Bundles.Bundles()) == 1
	})
	if err := p.Src.Reload(); err == nil || !strings.Contains(err.Error(), "no bundle for trust domain partner.test") {
		t.Fatalf("reload without partner.test: %v", err)
	}
	if certs := p.Certificates(); len(certs) != 1 || !certs[0].Equal(partner.Cert) {
		t.Fatal("the pool changed to a version without partner.test")
	}
}

// TestPoolNeverNil: CertPool answers with the last bundles after Cleanup
// (a nil pool would mean the system roots to crypto/x509).
func TestPoolNeverNil(t *testing.T) {
	ours := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/proxy", ca: ours}}, nil)
	f.set(resp)
	p := &Pool{Agent: Agent{Socket: f.addr}}
	if err := p.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	p.Cleanup()
	f.stop()
	if p.CertPool() == nil || len(p.Certificates()) != 1 {
		t.Fatal("no last good pool after Cleanup")
	}
}
