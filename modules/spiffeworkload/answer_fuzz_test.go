package spiffeworkload

import (
	"crypto/x509"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/keystore"
)

// FuzzAgentAnswer feeds the parts of a Workload API answer (the SVID's
// DER chain and PKCS#8 key, a bundle's DER certificates and its trust
// domain), parsed as go-spiffe's client parses them, to what this package
// builds from them: the identity, and the pool with its scoped anchors.
// Nothing may panic; a pool is built only of CA certificates, each scoped
// to its bundle's trust domain; an identity's leaf is the SVID's.
func FuzzAgentAnswer(f *testing.F) {
	ca := testpki.NewCA(f, "example.org ca")
	inter := ca.NewIntermediate(f, "example.org intermediate")
	for _, l := range []*testpki.Leaf{
		ca.Issue(f, testpki.URI("spiffe://example.org/a")),
		inter.Issue(f, testpki.URI("spiffe://example.org/b"), testpki.ServerOnly()),
	} {
		der := l.Cert.Raw
		for _, c := range l.Chain {
			der = append(der, c.Raw...)
		}
		key, err := x509.MarshalPKCS8PrivateKey(l.Key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der, key, ca.Cert.Raw, "spiffe://example.org")
		f.Add(der, key, l.Cert.Raw, "spiffe://partner.test")
	}
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01}, []byte{}, []byte{0x30}, "example.org")
	f.Fuzz(func(t *testing.T, svidDER, keyDER, bundleDER []byte, tdID string) {
		td, err := spiffeid.TrustDomainFromString(tdID)
		if err != nil {
			return
		}
		authorities, err := x509.ParseCertificates(bundleDER)
		if err != nil {
			return
		}
		x := &workloadapi.X509Context{Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(td, authorities))}
		if s, err := x509svid.ParseRaw(svidDER, keyDER); err == nil {
			x.SVIDs = append(x.SVIDs, s)
			for _, u := range []keystore.Usage{keystore.UsageAny, keystore.UsageClientAuth, keystore.UsageServerAuth} {
				svid, err := pickSVID(x, s.ID)
				if err != nil {
					t.Fatalf("the SVID %s is not picked by its own ID: %v", s.ID, err)
				}
				cert, err := identity(svid, u)
				if err != nil {
					continue
				}
				if cert.Leaf != s.Certificates[0] || len(cert.Certificate) != len(s.Certificates) {
					t.Fatal("identity is not the SVID")
				}
			}
		}
		for _, tds := range [][]spiffeid.TrustDomain{nil, {td}} {
			l, err := bundleAnchors(x, tds)
			if err != nil {
				continue
			}
			anc := l.Value
			if !anc.SPIFFE() {
				t.Fatal("a version of the agent's bundles is not scoped per trust domain")
			}
			for _, c := range anc.Certificates() {
				if !c.IsCA {
					t.Fatal("a pool holds a certificate that is not a CA")
				}
			}
			b, err := anc.GetX509BundleForTrustDomain(td)
			if err != nil || !slices.ContainsFunc(anc.Certificates(), b.HasX509Authority) {
				t.Fatalf("no authority scoped to %s: %v", td.Name(), err)
			}
		}
	})
}
