package verify

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/internal/testpki"
)

func td(t *testing.T, name string) spiffeid.TrustDomain {
	t.Helper()
	d, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// reparse is a second object of the same certificate: what another pool
// source reading the same file holds.
func reparse(t *testing.T, c *x509.Certificate) *x509.Certificate {
	t.Helper()
	again, err := x509.ParseCertificate(c.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return again
}

// TestSPIFFEVersionVerifiesInItsOwnDomain: an authority of a SPIFFE
// version vouches only for X509-SVIDs of its own trust domain; a plain
// version's CA vouches for any leaf.
func TestSPIFFEVersionVerifiesInItsOwnDomain(t *testing.T) {
	ours := testpki.NewCA(t, "example.org authority")
	partner := testpki.NewCA(t, "partner.example authority")
	plainCA := testpki.NewCA(t, "plain ca")
	spiffe, err := NewSPIFFEAnchors([]Domain{
		{TrustDomain: td(t, "example.org"), Authorities: []*x509.Certificate{ours.Cert}, Origin: "ours.json"},
		{TrustDomain: td(t, "partner.example"), Authorities: []*x509.Certificate{partner.Cert}, Origin: "partner.json"},
	})
	if err != nil {
		t.Fatal(err)
	}
	plain := NewAnchors([]*x509.Certificate{plainCA.Cert})
	cases := []struct {
		name    string
		anchors *Anchors
		leaf    *testpki.Leaf
		td      string
		reason  string // "" when admitted
		text    string
	}{
		{"own domain", spiffe, ours.Issue(t, testpki.URI("spiffe://example.org/admin")), "example.org", "", ""},
		{"partner's own domain", spiffe, partner.Issue(t, testpki.URI("spiffe://partner.example/web")), "partner.example", "", ""},
		{"partner minting ours", spiffe, partner.Issue(t, testpki.URI("spiffe://example.org/admin")), "", ReasonTrustDomain, "an authority vouches only for its own trust domain"},
		{"no SPIFFE ID under a SPIFFE authority", spiffe, partner.Issue(t, testpki.DNS("admin.example.org")), "", ReasonTrustDomain, "no X509-SVID"},
		{"two URI SANs", spiffe, ours.Issue(t, testpki.URI("spiffe://example.org/a", "spiffe://example.org/b")), "", ReasonTrustDomain, "no X509-SVID"},
		{"no path", spiffe, ours.Issue(t, testpki.URI("spiffe://example.org")), "", ReasonTrustDomain, "has no path"},
		{"server-only SVID as a client", spiffe, ours.Issue(t, testpki.URI("spiffe://example.org/web"), testpki.ServerOnly()), "", ReasonBadUsage, "lacks clientAuth"},
		{"unknown authority", spiffe, plainCA.Issue(t, testpki.URI("spiffe://example.org/admin")), "", ReasonUnknownAuthority, "unknown authority"},
		{"expired SVID", spiffe, ours.Issue(t, testpki.URI("spiffe://example.org/old"), testpki.Expired()), "", ReasonExpired, "expired"},
		{"plain CA, any ID", plain, plainCA.Issue(t, testpki.URI("spiffe://example.org/admin")), "", "", ""},
		{"plain CA, no ID", plain, plainCA.Issue(t, testpki.DNS("x")), "", "", ""},
		{"plain CA, server-only leaf", plain, plainCA.Issue(t, testpki.ServerOnly()), "", ReasonBadUsage, "incompatible key usage"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			chain, gotTD, err := c.anchors.Verify(c.leaf.Cert, c.leaf.Chain, x509.ExtKeyUsageClientAuth, time.Now())
			if c.reason == "" {
				if err != nil || gotTD != c.td || chain[0] != c.leaf.Cert {
					t.Fatalf("refused: %v (td %q)", err, gotTD)
				}
				return
			}
			if ReasonOf(err) != c.reason || !strings.Contains(err.Error(), c.text) || chain != nil {
				t.Fatalf("got %v (reason %q), want reason %q with %q", err, ReasonOf(err), c.reason, c.text)
			}
		})
	}
}

// TestScopeIsPerVersion: a partner's bundle that also lists a plain CA
// (our corporate root) does not change how any other pool verifies:
// clients of that CA in a plain pool keep their identity, chains verified
// against the system roots or another pool are not scoped, and nothing is
// left behind once the partner's version is gone.
func TestScopeIsPerVersion(t *testing.T) {
	corp := testpki.NewCA(t, "corporate root")
	partner := testpki.NewCA(t, "partner.test authority")
	_, err := NewSPIFFEAnchors([]Domain{{TrustDomain: td(t, "partner.test"),
		Authorities: []*x509.Certificate{partner.Cert, reparse(t, corp.Cert)}, Origin: "partner.json"}})
	if err != nil {
		t.Fatal(err)
	}
	plain := NewAnchors([]*x509.Certificate{corp.Cert})
	client := corp.Issue(t, testpki.DNS("app.corp.example"), testpki.ClientOnly())
	if _, gotTD, err := plain.Verify(client.Cert, nil, x509.ExtKeyUsageClientAuth, time.Now()); err != nil || gotTD != "" {
		t.Fatalf("a client of the corporate root is refused by a plain pool once a partner's bundle lists that root: %v", err)
	}
	// a chain crypto/tls verified against another pool object of the same CA
	chains, err := client.Cert.Verify(x509.VerifyOptions{Roots: corp.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	if _, gotTD, err := Scope(chains, x509.ExtKeyUsageClientAuth); err != nil || gotTD != "" {
		t.Fatalf("a chain to the corporate root verified elsewhere is scoped to the partner: %v", err)
	}
}

// TestAuthorityOfTwoDomainsRefused: one version may not list an authority
// for two trust domains (crypto/x509 keeps one object, and the domain it
// stood for would depend on the order): the error names both.
func TestAuthorityOfTwoDomainsRefused(t *testing.T) {
	ours := testpki.NewCA(t, "example.org authority")
	partner := testpki.NewCA(t, "partner.test authority")
	_, err := NewSPIFFEAnchors([]Domain{
		{TrustDomain: td(t, "partner.test"), Authorities: []*x509.Certificate{partner.Cert, reparse(t, ours.Cert)}, Origin: "partner.json"},
		{TrustDomain: td(t, "example.org"), Authorities: []*x509.Certificate{ours.Cert}, Origin: "ours.json"},
	})
	for _, want := range []string{"example.org authority", "partner.test (partner.json)", "example.org (ours.json)", "one trust domain only"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want an error with %q", err, want)
		}
	}
}

// TestScopeOfChainsVerifiedElsewhere: a chain crypto/tls verified against
// a flat pool that holds a SPIFFE version's authorities (Caddy's own
// trust_pool, or its `combined` pool) is scoped by that version.
func TestScopeOfChainsVerifiedElsewhere(t *testing.T) {
	ours := testpki.NewCA(t, "example.org authority")
	partner := testpki.NewCA(t, "partner.test authority")
	a, err := NewSPIFFEAnchors([]Domain{
		{TrustDomain: td(t, "example.org"), Authorities: []*x509.Certificate{ours.Cert}},
		{TrustDomain: td(t, "partner.test"), Authorities: []*x509.Certificate{partner.Cert}},
	})
	if err != nil {
		t.Fatal(err)
	}
	verified := func(leaf *testpki.Leaf) [][]*x509.Certificate {
		chains, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: a.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			t.Fatal(err)
		}
		return chains
	}
	if _, gotTD, err := Scope(verified(ours.Issue(t, testpki.URI("spiffe://example.org/admin"))), x509.ExtKeyUsageClientAuth); err != nil || gotTD != "example.org" {
		t.Fatalf("own SVID: %v %q", err, gotTD)
	}
	_, _, err = Scope(verified(partner.Issue(t, testpki.URI("spiffe://example.org/admin"))), x509.ExtKeyUsageClientAuth)
	var serr *ScopeError
	if !errors.As(err, &serr) || ReasonOf(err) != ReasonTrustDomain || serr.AnchorDomain.Name() != "partner.test" {
		t.Fatalf("partner minting ours: %v", err)
	}
}
