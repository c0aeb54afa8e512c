package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/material"
)

type scopePool struct{ pool *x509.CertPool }

func (s scopePool) CertPool() *x509.CertPool { return s.pool }

// TestVerifySPIFFEScope: with a trust pool of two federated trust domains,
// a backend certificate that the partner's authority issued for one of our
// SPIFFE IDs is refused, pinned or not; the partner's own backends verify.
func TestVerifySPIFFEScope(t *testing.T) {
	ours, partner := testpki.NewCA(t, "example.org authority"), testpki.NewCA(t, "partner authority")
	material.ScopeAnchors("example.org", []*x509.Certificate{ours.Cert})
	material.ScopeAnchors("partner.example", []*x509.Certificate{partner.Cert})
	pool := x509.NewCertPool()
	pool.AddCert(ours.Cert)
	pool.AddCert(partner.Cert)
	pins, err := ParsePins([]string{"spiffe://example.org/payments", "spiffe://partner.example"})
	if err != nil {
		t.Fatal(err)
	}
	l := &LiveTLS{Pool: scopePool{pool}, Pins: pins}
	cs := func(leaf *testpki.Leaf) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}}
	}
	if err := l.Verify(cs(ours.Issue(t, testpki.URI("spiffe://example.org/payments"), testpki.ServerOnly())), ""); err != nil {
		t.Fatalf("our own backend: %v", err)
	}
	if err := l.Verify(cs(partner.Issue(t, testpki.URI("spiffe://partner.example/api"), testpki.ServerOnly())), ""); err != nil {
		t.Fatalf("the partner's own backend: %v", err)
	}
	err = l.Verify(cs(partner.Issue(t, testpki.URI("spiffe://example.org/payments"), testpki.ServerOnly())), "")
	if err == nil || !strings.Contains(err.Error(), "an authority vouches only for its own trust domain") {
		t.Fatalf("the partner's CA standing in for our payments backend: %v", err)
	}
	dnsOnly := &LiveTLS{Pool: scopePool{pool}}
	if err := dnsOnly.Verify(cs(partner.Issue(t, testpki.DNS("payments.internal"), testpki.ServerOnly())), "payments.internal"); err == nil {
		t.Fatal("a DNS-named certificate of a SPIFFE authority verified")
	}
}
