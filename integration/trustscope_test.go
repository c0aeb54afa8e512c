package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// multiBundleFile writes one trust domain's bundle listing several
// authorities.
func multiBundleFile(t *testing.T, dir, name, td string, cas ...*testpki.CA) string {
	t.Helper()
	var auth []*x509.Certificate
	for _, ca := range cas {
		auth = append(auth, ca.Cert)
	}
	data, err := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), auth).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return testpki.WriteFile(t, dir, name, data)
}

// TestTrustScopePerPool: a federated partner whose bundle also lists our
// corporate root (its own mistake, or a public root) changes nothing
// outside the pool that holds that bundle: clients of the corporate root
// keep their access to a plain `trust_pool file` site with a peer
// verifier, a backend of that root still verifies, and so after the
// partner's site is removed by a reload. A partner listed in the same
// spiffe_bundle as our own domain, and listing our root, is refused at
// load, naming both trust domains (before, it took our root over: all our
// own SVIDs were refused).
func TestTrustScopePerPool(t *testing.T) {
	p := newPeerPKI(t)
	corp := testpki.NewCA(t, "Corporate Root")
	partner := testpki.NewCA(t, "partner.test authority")
	corpFile := testpki.WriteFile(t, p.dir, "corp.pem", corp.CertPEM())
	partnerBundle := multiBundleFile(t, p.dir, "partner.json", "partner.test", partner, corp)

	backendCert := corp.Issue(t, testpki.DNS("db.corp.internal"), testpki.ServerOnly())
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "backend")
	}))
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{backendCert.TLS()}}
	backend.StartTLS()
	t.Cleanup(backend.Close)

	corpSite, partnerSite := bench.FreeAddr(t), bench.FreeAddr(t)
	config := func(withPartner bool) string {
		cf := fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
			verifier peer dns:*.corp.example
		}
	}
	handle /db {
		reverse_proxy %[7]s {
			transport mtls {
				trust_pool bundle %[5]s
				tls_server_name db.corp.internal
			}
		}
	}
	handle {
		peer_identity
		respond "corp: {peer.dns}"
	}
}
`, bench.Port(corpSite), bench.Port(partnerSite), p.srvCert, p.srvKey, corpFile, partnerBundle, backend.Listener.Addr())
		if withPartner {
			cf += fmt.Sprintf(`https://localhost:%[1]s {
	tls %[2]s %[3]s {
		client_auth {
			verifier live_trust spiffe_bundle {
				bundle partner.test %[4]s
			}
		}
	}
	peer_identity
	respond "partner: {peer.spiffe_id}"
}
`, bench.Port(partnerSite), p.srvCert, p.srvKey, partnerBundle)
		}
		return cf
	}
	c := bench.Start(t, config(true))

	cl := chainClient{serverCA: p.root.Pool()}
	app := corp.Issue(t, testpki.DNS("app.corp.example"), testpki.ClientOnly())
	check := func(when string) {
		t.Helper()
		if code, body, err := cl.get(corpSite, "/", app); err != nil || code != 200 || body != "corp: app.corp.example" {
			t.Fatalf("%s: a client of the corporate root on the plain site: %d %q %v", when, code, body, err)
		}
		if code, body, err := cl.get(corpSite, "/db", app); err != nil || code != 200 || body != "backend" {
			t.Fatalf("%s: a backend of the corporate root: %d %q %v", when, code, body, err)
		}
	}
	check("beside the partner's site")
	partnerApp := partner.Issue(t, testpki.URI("spiffe://partner.test/app"), testpki.ClientOnly())
	if code, body, err := cl.get(partnerSite, "/", partnerApp); err != nil || body != "partner: spiffe://partner.test/app" {
		t.Fatalf("the partner's own workload: %d %q %v", code, body, err)
	}
	// the partner's bundle lists our root: on its own site it stands for
	// partner.test SVIDs only
	if code, body, err := cl.get(partnerSite, "/", app); err == nil {
		t.Fatalf("a DNS-named client of a root the partner's bundle lists got through the partner's site: %d %q", code, body)
	}
	if err := c.Load(t, config(false)); err != nil {
		t.Fatal(err)
	}
	check("after the partner's site was removed")

	// one spiffe_bundle, the partner first, listing our own root too
	ours := testpki.NewCA(t, "example.org authority")
	takeover := multiBundleFile(t, p.dir, "takeover.json", "partner.test", partner, ours)
	err := c.Load(t, config(false)+fmt.Sprintf(`https://localhost:%[1]s {
	tls %[2]s %[3]s {
		client_auth {
			verifier live_trust spiffe_bundle {
				bundle partner.test %[4]s
				bundle example.org %[5]s
			}
		}
	}
	peer_identity
	respond "ours: {peer.spiffe_id}"
}
`, bench.Port(partnerSite), p.srvCert, p.srvKey, takeover, spiffeBundleFile(t, p.dir, "example.org", ours)))
	for _, want := range []string{"example.org authority", "trust domain partner.test", "trust domain example.org", "one trust domain only"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("a bundle listing our root for the partner: load gave %v, want an error with %q", err, want)
		}
	}
	check("after the refused load")
}
