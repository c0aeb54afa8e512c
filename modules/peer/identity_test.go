package peer

import (
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/verify"
)

func TestIdentityFields(t *testing.T) {
	root := testpki.NewCA(t, "Root CA", testpki.Org("Acme"))
	inter := root.NewIntermediate(t, "Issuing CA", testpki.Org("Acme"))
	leaf := inter.Issue(t, testpki.CN("web"), testpki.URI("spiffe://example.org/ns/prod/sa/web"),
		testpki.DNS("Web.Example.com"), testpki.IP("::ffff:10.0.0.1"))
	chain := []*x509.Certificate{leaf.Cert, inter.Cert, root.Cert}
	id := NewIdentity(leaf.Cert, chain)
	if id.SPIFFEID != "spiffe://example.org/ns/prod/sa/web" || id.TrustDomain != "example.org" || id.spiffePath != "ns/prod/sa/web" {
		t.Fatalf("spiffe: %q %q %q", id.SPIFFEID, id.TrustDomain, id.spiffePath)
	}
	if id.DNSNames[0] != "web.example.com" || id.IPs[0].String() != "10.0.0.1" {
		t.Fatalf("SANs: %v %v", id.DNSNames, id.IPs)
	}
	if id.Issuer != "CN=Issuing CA,O=Acme" || id.IssuerCommonName != "Issuing CA" || id.Subject != "CN=web" {
		t.Fatalf("DNs: %q %q", id.Subject, id.Issuer)
	}
	if id.Serial != leaf.Cert.SerialNumber.Text(16) || len(id.FingerprintHex) != 64 || len(id.SPKIHex) != 64 {
		t.Fatalf("serial/hashes: %q %q %q", id.Serial, id.FingerprintHex, id.SPKIHex)
	}
	if len(id.Chain) != 2 || &id.Chain[0][0] != &inter.Cert.Raw[0] || &id.Chain[1][0] != &root.Cert.Raw[0] {
		t.Fatalf("chain: %d entries", len(id.Chain))
	}
	if !id.NotAfter.Equal(leaf.Cert.NotAfter) {
		t.Fatal("not after")
	}
}

func TestFromChainsNeedsVerifiedChain(t *testing.T) {
	if FromChains(nil) != nil || FromChains([][]*x509.Certificate{{}}) != nil || FromState(nil) != nil {
		t.Fatal("an identity without a verified chain")
	}
	// presented but not verified: PeerCertificates set, VerifiedChains empty
	ca := testpki.NewCA(t, "root")
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{ca.Issue(t).Cert}}
	if FromState(cs) != nil {
		t.Fatal("an unverified certificate has an identity")
	}
}

// TestIdentityCacheFollowsCertificate checks that the cache returns the same
// identity for the same certificate object and drops it once the
// certificate is collected.
func TestIdentityCacheFollowsCertificate(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	var keys []weak.Pointer[x509.Certificate]
	var keep [][][]*x509.Certificate
	for i := 0; i < 50; i++ {
		// a fresh parse of the certificate, as crypto/tls holds it
		c, err := x509.ParseCertificate(ca.Issue(t).Cert.Raw)
		if err != nil {
			t.Fatal(err)
		}
		chains := [][]*x509.Certificate{{c, ca.Cert}}
		a, b := FromChains(chains), FromChains(chains)
		if a == nil || a != b {
			t.Fatal("the same certificate gave two identities")
		}
		keys = append(keys, weak.Make(c))
		keep = append(keep, chains)
	}
	cached := func() (n int) {
		for _, k := range keys {
			if _, ok := cache.Load(k); ok {
				n++
			}
		}
		return n
	}
	runtime.GC()
	if n := cached(); n != 50 {
		t.Fatalf("%d of 50 live certificates cached", n)
	}
	runtime.KeepAlive(keep)
	deadline := time.Now().Add(10 * time.Second)
	for cached() > 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := cached(); n > 0 {
		t.Fatalf("%d identities still cached after their certificates were collected", n)
	}
}

// TestIdentityOncePerConnection sends many requests over one keep-alive
// connection (HTTP/1.1, then HTTP/2) and checks that the identity was built
// once per connection.
func TestIdentityOncePerConnection(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			ca := testpki.NewCA(t, "root")
			srvLeaf := ca.Issue(t, testpki.DNS("localhost"), testpki.IP("127.0.0.1"))
			client := ca.Issue(t, testpki.URI("spiffe://example.org/c"))
			p := Patterns{SPIFFEID: []string{"spiffe://example.org/*"}}
			if err := p.Compile(); err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ok, _ := p.Match(FromState(r.TLS)); !ok {
					w.WriteHeader(http.StatusForbidden)
				}
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvLeaf.TLS()}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
			srv.EnableHTTP2 = h2
			srv.StartTLS()
			defer srv.Close()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLS()}}, ForceAttemptHTTP2: h2}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			before := computed.Load()
			for i := 0; i < 100; i++ {
				resp, err := hc.Get(srv.URL)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || (resp.ProtoMajor == 2) != h2 {
					t.Fatalf("status %d proto %s", resp.StatusCode, resp.Proto)
				}
			}
			if n := computed.Load() - before; n != 1 {
				t.Fatalf("identity built %d times for 100 requests on one connection", n)
			}
		})
	}
}

func benchLeaf(b *testing.B) (*x509.Certificate, *testpki.CA) {
	ca := testpki.NewCA(b, "root", testpki.Org("Acme"))
	l := ca.Issue(b, testpki.CN("web"), testpki.Org("Acme"), testpki.OU("payments"),
		testpki.URI("spiffe://example.org/ns/prod/sa/web"),
		testpki.DNS("web.prod.svc.cluster.local", "web.example.com"), testpki.IP("10.0.0.7"))
	return l.Cert, ca
}

// BenchmarkIdentityBuild is the once-per-connection cost.
func BenchmarkIdentityBuild(b *testing.B) {
	leaf, ca := benchLeaf(b)
	chain := []*x509.Certificate{leaf, ca.Cert}
	b.ReportAllocs()
	for b.Loop() {
		NewIdentity(leaf, chain)
	}
}

// BenchmarkIdentityCached is the per-request cost on a keep-alive
// connection: a cache hit, no parsing.
func BenchmarkIdentityCached(b *testing.B) {
	leaf, ca := benchLeaf(b)
	chains := [][]*x509.Certificate{{leaf, ca.Cert}}
	FromChains(chains)
	before := computed.Load()
	b.ReportAllocs()
	for b.Loop() {
		if FromChains(chains) == nil {
			b.Fatal("no identity")
		}
	}
	if computed.Load() != before {
		b.Fatal("the identity was rebuilt")
	}
}

// twentyPatterns is a realistic policy: 20 patterns over four fields, the
// matching ones last in each field.
func twentyPatterns() Patterns {
	var p Patterns
	for i := 0; i < 12; i++ {
		p.SPIFFEID = append(p.SPIFFEID, fmt.Sprintf("spiffe://example.org/ns/team%d/sa/*", i))
	}
	p.SPIFFEID = append(p.SPIFFEID, "spiffe://example.org/ns/*/sa/web")
	p.DNS = []string{"*.other.example.com", "api.example.com", "**.svc.cluster.local"}
	p.TrustDomain = []string{"other.org", "example.org"}
	p.OrganizationalUnit = []string{"ops", "payments"}
	return p
}

// BenchmarkMatch20 matches a cached identity against 20 patterns.
func BenchmarkMatch20(b *testing.B) {
	leaf, ca := benchLeaf(b)
	p := twentyPatterns()
	if err := p.Compile(); err != nil {
		b.Fatal(err)
	}
	id := FromChains([][]*x509.Certificate{{leaf, ca.Cert}})
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := p.Match(id); !ok {
			b.Fatal("no match")
		}
	}
}

// BenchmarkLookupAndMatch20 is the whole per-request cost of a peer
// matcher: cache lookup plus 20 patterns.
func BenchmarkLookupAndMatch20(b *testing.B) {
	leaf, ca := benchLeaf(b)
	p := twentyPatterns()
	if err := p.Compile(); err != nil {
		b.Fatal(err)
	}
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert}}}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := p.Match(FromState(cs)); !ok {
			b.Fatal("no match")
		}
	}
}

// BenchmarkMatch20Miss: the same 20 patterns, an identity that fails on the
// last field checked.
func BenchmarkMatch20Miss(b *testing.B) {
	leaf, ca := benchLeaf(b)
	p := twentyPatterns()
	p.OrganizationalUnit = []string{"ops", "finance"}
	if err := p.Compile(); err != nil {
		b.Fatal(err)
	}
	id := FromChains([][]*x509.Certificate{{leaf, ca.Cert}})
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := p.Match(id); ok {
			b.Fatal("matched")
		}
	}
}

// TestFromChainsTrustDomainScope: a chain that crypto/tls verified against
// a flat pool holding a federated partner's SPIFFE authority yields no
// identity when the partner minted one of our IDs, and the handshake
// verifier refuses it with the reason; the partner's own IDs stand, with
// the anchor's trust domain.
func TestFromChainsTrustDomainScope(t *testing.T) {
	partner := testpki.NewCA(t, "partner authority")
	partnerTD, _ := spiffeid.TrustDomainFromString("partner.example")
	if _, err := verify.NewSPIFFEAnchors([]verify.Domain{{TrustDomain: partnerTD, Authorities: []*x509.Certificate{partner.Cert}}}); err != nil {
		t.Fatal(err)
	}
	forged := partner.Issue(t, testpki.URI("spiffe://example.org/admin"), testpki.ClientOnly())
	own := partner.Issue(t, testpki.URI("spiffe://partner.example/app"), testpki.ClientOnly())

	if id := FromChains([][]*x509.Certificate{{forged.Cert, partner.Cert}}); id != nil {
		t.Fatalf("a partner-minted spiffe://example.org/admin has an identity: %s", id.SPIFFEID)
	}
	id := FromChains([][]*x509.Certificate{{own.Cert, partner.Cert}})
	if id == nil || id.SPIFFEID != "spiffe://partner.example/app" || id.AnchorTrustDomain != "partner.example" {
		t.Fatalf("the partner's own workload: %+v", id)
	}
	v := &Verifier{Patterns: Patterns{TrustDomain: []string{"example.org", "partner.example"}}}
	if err := v.Compile(); err != nil {
		t.Fatal(err)
	}
	observed(v)
	err := v.VerifyClientCertificate([][]byte{forged.Cert.Raw}, [][]*x509.Certificate{{forged.Cert, partner.Cert}})
	if err == nil || !strings.Contains(err.Error(), "an authority vouches only for its own trust domain") {
		t.Fatalf("verifier peer on the forged SVID: %v", err)
	}
	if err := v.VerifyClientCertificate([][]byte{own.Cert.Raw}, [][]*x509.Certificate{{own.Cert, partner.Cert}}); err != nil {
		t.Fatalf("verifier peer on the partner's own SVID: %v", err)
	}
}
