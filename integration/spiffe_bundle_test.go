package integration

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// TestSPIFFEBundleSources: one trust domain's bundle from a watched file,
// another's from an HTTPS bundle endpoint that changes its authorities and
// is fetched again at its refresh hint.
func TestSPIFFEBundleSources(t *testing.T) {
	site := newMTLSSite(t)
	dir := t.TempDir()
	exampleCA, partnerCA, partnerNext := testpki.NewCA(t, "example.org ca"), testpki.NewCA(t, "partner ca"), testpki.NewCA(t, "partner ca 2")
	marshal := func(td string, ca *testpki.CA, refresh time.Duration) []byte {
		b := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), nil)
		b.AddX509Authority(ca.Cert)
		if refresh > 0 {
			b.SetRefreshHint(refresh)
		}
		data, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	bundleFile := testpki.WriteFile(t, dir, "example.org.json", marshal("example.org", exampleCA, 0))

	// the partner's bundle endpoint (https_web), with a certificate of its own CA
	endpointCA := testpki.NewCA(t, "endpoint ca")
	endpointCert := endpointCA.Issue(t, testpki.IP("127.0.0.1"), testpki.ServerOnly())
	endpointCAFile := testpki.WriteFile(t, dir, "endpoint-ca.pem", endpointCA.CertPEM())
	var served atomic.Pointer[[]byte]
	first := marshal("partner.test", partnerCA, 5*time.Second)
	served.Store(&first)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{endpointCert.TLS()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(*served.Load())
	})}
	go srv.Serve(ln)
	defer srv.Close()
	endpoint := "https://" + ln.Addr().(*net.TCPAddr).String() + "/bundle"

	c := bench.Start(t, site.Caddyfile(`verifier live_trust spiffe_bundle {
				bundle example.org `+bundleFile+`
				endpoint partner.test `+endpoint+` `+endpointCAFile+`
			}`))
	svc := site.client(t, "svc", exampleCA.Issue(t, testpki.URI("spiffe://example.org/svc"), testpki.ClientOnly()))
	partner := site.client(t, "partner", partnerCA.Issue(t, testpki.URI("spiffe://partner.test/app"), testpki.ClientOnly()))
	partner2 := site.client(t, "partner2", partnerNext.Issue(t, testpki.URI("spiffe://partner.test/app"), testpki.ClientOnly()))
	eventually(t, 2*time.Second, "example.org client (file bundle)", site.accepted(t, svc, "hello"))
	eventually(t, 2*time.Second, "partner client (endpoint bundle)", site.accepted(t, partner, "hello"))
	eventually(t, 2*time.Second, "partner's next CA not yet trusted", site.refused(t, partner2))

	// the partner rotates its CA: the next fetch, at the 5s refresh hint, follows
	next := marshal("partner.test", partnerNext, 5*time.Second)
	served.Store(&next)
	eventually(t, 8*time.Second, "partner's next CA trusted after the refresh hint", site.accepted(t, partner2, "hello"))
	eventually(t, time.Second, "partner's old CA no longer trusted", site.refused(t, partner))

	// a version listing the partner's CA for example.org too is refused:
	// an authority vouches for one trust domain; the last good one stays
	testpki.WriteFile(t, dir, "example.org.json", marshal("example.org", partnerNext, 0))
	c.WaitLog(t, "is listed by trust domain", 5*time.Second)
	eventually(t, time.Second, "example.org client still admitted by the last good version", site.accepted(t, svc, "hello"))

	// the file bundle changes: the example.org CA is replaced
	testpki.WriteFile(t, dir, "example.org.json", marshal("example.org", testpki.NewCA(t, "example.org ca 2"), 0))
	eventually(t, 2*time.Second, "example.org client refused once its CA leaves the bundle", site.refused(t, svc))
}
