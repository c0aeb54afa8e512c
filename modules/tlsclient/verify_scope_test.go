package tlsclient

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/verify"
)

// flatPool is another module's trust pool: a CertPool only.
type flatPool struct{ pool *x509.CertPool }

func (s flatPool) CertPool() *x509.CertPool { return s.pool }

// anchorPool is one of the suite's sources: a version of Anchors.
type anchorPool struct{ a *verify.Anchors }

func (s anchorPool) CertPool() *x509.CertPool        { return s.a.CertPool() }
func (s anchorPool) CurrentAnchors() *verify.Anchors { return s.a }
func (s anchorPool) Version() any                    { return s.a }
func (s anchorPool) OnChange(func()) (cancel func()) { return func() {} }

func spiffeAnchors(t *testing.T, domains map[string]*x509.Certificate) *verify.Anchors {
	t.Helper()
	var ds []verify.Domain
	for name, c := range domains {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, verify.Domain{TrustDomain: td, Authorities: []*x509.Certificate{c}})
	}
	a, err := verify.NewSPIFFEAnchors(ds)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestVerifySPIFFEScope: with a trust pool of two federated trust domains,
// a backend certificate that the partner's authority issued for one of our
// SPIFFE IDs is refused, pinned or not; the partner's own backends verify.
// The same holds behind another module's flat pool of the same authorities.
func TestVerifySPIFFEScope(t *testing.T) {
	ours, partner := testpki.NewCA(t, "example.org authority"), testpki.NewCA(t, "partner authority")
	anchors := spiffeAnchors(t, map[string]*x509.Certificate{"example.org": ours.Cert, "partner.example": partner.Cert})
	pins, err := ParsePins([]string{"spiffe://example.org/payments", "spiffe://partner.example"})
	if err != nil {
		t.Fatal(err)
	}
	cs := func(leaf *testpki.Leaf) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}}
	}
	for name, pool := range map[string]interface{ CertPool() *x509.CertPool }{
		"suite's source": anchorPool{anchors},
		"flat pool":      flatPool{anchors.CertPool()},
	} {
		t.Run(name, func(t *testing.T) {
			l := &Client{Pool: pool, Pins: pins}
			if err := l.Verify(cs(ours.Issue(t, testpki.URI("spiffe://example.org/payments"), testpki.ServerOnly())), ""); err != nil {
				t.Fatalf("our own backend: %v", err)
			}
			if err := l.Verify(cs(partner.Issue(t, testpki.URI("spiffe://partner.example/api"), testpki.ServerOnly())), ""); err != nil {
				t.Fatalf("the partner's own backend: %v", err)
			}
			err := l.Verify(cs(partner.Issue(t, testpki.URI("spiffe://example.org/payments"), testpki.ServerOnly())), "")
			if err == nil || !strings.Contains(err.Error(), "an authority vouches only for its own trust domain") {
				t.Fatalf("the partner's CA standing in for our payments backend: %v", err)
			}
			if reason, _ := Classify(err); reason != ReasonTrustDomain {
				t.Fatalf("classified %q, want %q", reason, ReasonTrustDomain)
			}
			dnsOnly := &Client{Pool: pool}
			if err := dnsOnly.Verify(cs(partner.Issue(t, testpki.DNS("payments.internal"), testpki.ServerOnly())), "payments.internal"); err == nil {
				t.Fatal("a DNS-named certificate of a SPIFFE authority verified")
			}
		})
	}
}

// TestVerifyScopeStaysInItsPool: a partner's bundle that also lists our
// corporate root does not change how a backend of that root verifies
// against another pool holding the root.
func TestVerifyScopeStaysInItsPool(t *testing.T) {
	corp, partner := testpki.NewCA(t, "corporate root"), testpki.NewCA(t, "partner authority")
	again, err := x509.ParseCertificate(corp.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	td, _ := spiffeid.TrustDomainFromString("partner.test")
	if _, err := verify.NewSPIFFEAnchors([]verify.Domain{{TrustDomain: td, Authorities: []*x509.Certificate{partner.Cert, again}}}); err != nil {
		t.Fatal(err)
	}
	backend := corp.Issue(t, testpki.DNS("db.corp.internal"), testpki.ServerOnly())
	for name, pool := range map[string]interface{ CertPool() *x509.CertPool }{
		"plain source": anchorPool{verify.NewAnchors([]*x509.Certificate{corp.Cert})},
		"flat pool":    flatPool{corp.Pool()},
	} {
		l := &Client{Pool: pool}
		if err := l.Verify(tls.ConnectionState{PeerCertificates: []*x509.Certificate{backend.Cert}}, "db.corp.internal"); err != nil {
			t.Fatalf("%s: a backend of our root is refused once a partner's bundle lists the root: %v", name, err)
		}
	}
}
