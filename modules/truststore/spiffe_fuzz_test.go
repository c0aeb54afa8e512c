package truststore

import (
	"github.com/trustline/trustline/modules/verify"

	"crypto/x509"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/testpki"
)

// FuzzSPIFFEBundle feeds bundle documents (JWKS, from a file or a bundle
// endpoint: outside input) through what spiffe_bundle does with one: parse
// it for its trust domain, take its X.509 authorities, check them as trust
// anchors. Nothing may panic, and an accepted bundle's anchors are CAs.
func FuzzSPIFFEBundle(f *testing.F) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testpki.NewCA(f, "example.org authority")
	b := spiffebundle.FromX509Authorities(td, []*x509.Certificate{ca.Cert})
	b.SetRefreshHint(300e9)
	seed, err := b.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA"]}],"spiffe_refresh_hint":-1}`))
	f.Add([]byte(`{"keys":[{"use":"jwt-svid","kty":"EC","kid":"k","crv":"P-256","x":"","y":""}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		bundle, err := spiffebundle.Parse(td, data)
		if err != nil {
			return
		}
		auth := bundle.X509Authorities()
		if err := checkAnchors(auth, zap.NewNop(), "fuzz"); err != nil {
			return
		}
		for _, c := range auth {
			if !c.IsCA {
				t.Fatalf("a non-CA authority passed checkAnchors: %s", c.Subject)
			}
		}
		if len(auth) > 0 {
			if _, err := verify.NewSPIFFEAnchors([]verify.Domain{{TrustDomain: td, Authorities: auth}}); err != nil {
				t.Fatalf("accepted authorities refused as a version: %v", err)
			}
		}
		bundle.RefreshHint()
	})
}
