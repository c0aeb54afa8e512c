package material

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

// TestScopeChains: an authority of a SPIFFE bundle vouches only for
// X509-SVIDs of its own trust domain; a plain CA vouches for any leaf.
func TestScopeChains(t *testing.T) {
	ours := testpki.NewCA(t, "example.org authority")
	partner := testpki.NewCA(t, "partner.example authority")
	plain := testpki.NewCA(t, "plain ca")
	ScopeAnchors("example.org", []*x509.Certificate{ours.Cert})
	ScopeAnchors("partner.example", []*x509.Certificate{partner.Cert})

	verify := func(ca *testpki.CA, leaf *testpki.Leaf) [][]*x509.Certificate {
		t.Helper()
		chains, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			t.Fatal(err)
		}
		return chains
	}
	cases := []struct {
		name   string
		ca     *testpki.CA
		leaf   *testpki.Leaf
		td     string
		reason string // "" when it vouches
	}{
		{"own domain", ours, ours.Issue(t, testpki.URI("spiffe://example.org/admin")), "example.org", ""},
		{"partner's own domain", partner, partner.Issue(t, testpki.URI("spiffe://partner.example/web")), "partner.example", ""},
		{"partner minting ours", partner, partner.Issue(t, testpki.URI("spiffe://example.org/admin")), "", "of trust domain example.org"},
		{"no SPIFFE ID under a SPIFFE authority", partner, partner.Issue(t, testpki.DNS("admin.example.org")), "", "not an X509-SVID"},
		{"two URI SANs", ours, ours.Issue(t, testpki.URI("spiffe://example.org/a", "spiffe://example.org/b")), "", "not an X509-SVID"},
		{"no path", ours, ours.Issue(t, testpki.URI("spiffe://example.org")), "", "no path"},
		{"plain CA, any ID", plain, plain.Issue(t, testpki.URI("spiffe://example.org/admin")), "", ""},
		{"plain CA, no ID", plain, plain.Issue(t, testpki.DNS("x")), "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			chain, td, err := ScopeChains(verify(c.ca, c.leaf))
			if c.reason == "" {
				if err != nil || td != c.td || chain[0] != c.leaf.Cert {
					t.Fatalf("refused: %v (td %q)", err, td)
				}
				return
			}
			var serr *ScopeError
			if !errors.As(err, &serr) || !strings.Contains(err.Error(), c.reason) || chain != nil {
				t.Fatalf("got %v, want a scope error with %q", err, c.reason)
			}
		})
	}

	// a chain rebuilt from a session ticket has a fresh anchor object: the
	// scope still applies, by content
	reparsed, err := x509.ParseCertificate(partner.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	forged := partner.Issue(t, testpki.URI("spiffe://example.org/admin"))
	if _, _, err := ScopeChains([][]*x509.Certificate{{forged.Cert, reparsed}}); err == nil {
		t.Fatal("a re-parsed partner authority vouched for example.org")
	}
}
