package integration

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// The trust path, tried as an attacker would, through the real binary:
// identity and revocation read the chain that verification returned for
// this connection, and a SPIFFE authority vouches only for its own trust
// domain.

// chainClient makes requests presenting exactly chain (leaf first, with
// leaf's key), so a test can leave the issuers out or append forged ones.
type chainClient struct {
	serverCA *x509.CertPool
}

func (c chainClient) get(addr, path string, leaf *testpki.Leaf, chain ...*x509.Certificate) (int, string, error) {
	cert := tls.Certificate{PrivateKey: leaf.Key, Certificate: [][]byte{leaf.Cert.Raw}}
	for _, ch := range chain {
		cert.Certificate = append(cert.Certificate, ch.Raw)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: c.serverCA, ServerName: "localhost",
		Certificates: []tls.Certificate{cert},
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://localhost:" + bench.Port(addr) + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

func spiffeBundleFile(t *testing.T, dir, td string, ca *testpki.CA) string {
	t.Helper()
	b := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), []*x509.Certificate{ca.Cert})
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return testpki.WriteFile(t, dir, td+".json", data)
}

// TestTrustPathSPIFFEFederation: with two federated trust domains in one
// spiffe_bundle, the partner's CA cannot mint an identity of ours, neither
// through live_trust (refused at the handshake) nor through Caddy's own
// trust_pool (crypto/tls verifies against the flat pool; the identity
// then has no SPIFFE ID, and peer_authorize denies).
func TestTrustPathSPIFFEFederation(t *testing.T) {
	p := newPeerPKI(t)
	ours, partner := testpki.NewCA(t, "example.org authority"), testpki.NewCA(t, "partner authority")
	bundles := fmt.Sprintf(`spiffe_bundle {
					bundle example.org %s
					bundle partner.example %s
				}`, spiffeBundleFile(t, p.dir, "example.org", ours), spiffeBundleFile(t, p.dir, "partner.example", partner))
	live, builtin := bench.FreeAddr(t), bench.FreeAddr(t)
	bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[3]s %[4]s {
		client_auth {
			verifier live_trust %[5]s
		}
	}
	handle /whoami {
		peer_identity
		respond "{peer.verified} {peer.spiffe_id} {peer.trust_domain}"
	}
	handle {
		peer_authorize spiffe://example.org/*
		respond "in: {peer.spiffe_id}"
	}
}
https://localhost:%[2]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool %[5]s
		}
	}
	handle /whoami {
		peer_identity
		respond "{peer.verified} {peer.spiffe_id} {peer.trust_domain}"
	}
	handle {
		peer_authorize spiffe://example.org/*
		respond "in: {peer.spiffe_id}"
	}
}
`, bench.Port(live), bench.Port(builtin), p.srvCert, p.srvKey, bundles))

	cl := chainClient{serverCA: p.root.Pool()}
	svc := ours.Issue(t, testpki.URI("spiffe://example.org/svc"), testpki.ClientOnly())
	forged := partner.Issue(t, testpki.URI("spiffe://example.org/admin"), testpki.ClientOnly())
	partnerApp := partner.Issue(t, testpki.URI("spiffe://partner.example/app"), testpki.ClientOnly())
	partnerDNS := partner.Issue(t, testpki.DNS("admin.example.org"), testpki.ClientOnly())

	for _, site := range []struct{ name, addr string }{{"live_trust", live}, {"trust_pool", builtin}} {
		t.Run(site.name, func(t *testing.T) {
			if code, body, err := cl.get(site.addr, "/", svc); err != nil || code != 200 || body != "in: spiffe://example.org/svc" {
				t.Fatalf("our own workload: %d %q %v", code, body, err)
			}
			code, body, err := cl.get(site.addr, "/", forged)
			if site.name == "live_trust" {
				if err == nil {
					t.Fatalf("the partner's CA minting spiffe://example.org/admin got through the handshake: %d %q", code, body)
				}
			} else if err != nil || code != http.StatusForbidden {
				t.Fatalf("the partner's CA minting spiffe://example.org/admin: %d %q %v, want 403", code, body, err)
			}
			if site.name == "trust_pool" {
				// crypto/tls accepted the handshake; the identity is refused
				if code, body, err := cl.get(site.addr, "/whoami", forged); err != nil || body != "false  " {
					t.Fatalf("whoami of the forged SVID: %d %q %v", code, body, err)
				}
			}
			// the partner's own workload verifies under its own domain
			if code, body, err := cl.get(site.addr, "/whoami", partnerApp); err != nil || body != "true spiffe://partner.example/app partner.example" {
				t.Fatalf("the partner's own workload: %d %q %v", code, body, err)
			}
			if code, _, err := cl.get(site.addr, "/", partnerApp); err != nil || code != http.StatusForbidden {
				t.Fatalf("the partner's workload on an example.org-only route: %d %v", code, err)
			}
			// a SPIFFE authority vouches for X509-SVIDs only
			code, body, err = cl.get(site.addr, "/whoami", partnerDNS)
			if site.name == "live_trust" && err == nil {
				t.Fatalf("a non-SVID leaf of a SPIFFE authority got through the handshake: %d %q", code, body)
			}
			if site.name == "trust_pool" && (err != nil || body != "false  ") {
				t.Fatalf("a non-SVID leaf of a SPIFFE authority: %d %q %v", code, body, err)
			}
		})
	}
}

// TestTrustPathLiveTrustChain: with live_trust, revocation and forwarding
// read the chain verification returned, not what the client presented: a
// revoked leaf sent without its chain, a revoked leaf behind a forged
// issuer (which made a covered CRL "unavailable" for crl_soft_fail), a
// leaf under a revoked intermediate are refused; distribution points of
// certificates the client appended are never fetched; Client-Cert-Chain
// carries the verified chain, not a self-made root.
func TestTrustPathLiveTrustChain(t *testing.T) {
	p := newPeerPKI(t)
	root := p.root
	revokedInter := root.NewIntermediate(t, "Revoked Issuing CA")
	revokedLeaf := root.Issue(t, testpki.CN("revoked"), testpki.ClientOnly())
	goodLeaf := root.Issue(t, testpki.CN("good"), testpki.ClientOnly())
	underRevoked := revokedInter.Issue(t, testpki.CN("under-revoked"), testpki.ClientOnly())
	crlFile := testpki.WriteFile(t, p.dir, "root.crl", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL",
		Bytes: peerCRL(t, root, revokedLeaf.Cert, revokedInter.Cert)}))

	// a forged issuer with the root's name, and junk with a distribution point
	forgedRoot := testpki.NewCA(t, root.Cert.Subject.CommonName, testpki.Org(root.Cert.Subject.Organization...))
	var dpHits atomic.Int64
	dp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { dpHits.Add(1) }))
	defer dp.Close()
	junkCA := testpki.NewCA(t, "junk")
	junk := junkCA.NewIntermediate(t, "junk with a distribution point", func(c *x509.Certificate) {
		c.CRLDistributionPoints = []string{dp.URL + "/junk.crl"}
	})

	backend := newHeaderEcho(t)
	files, dps := bench.FreeAddr(t), bench.FreeAddr(t)
	bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[3]s %[4]s {
		client_auth {
			verifier live_trust bundle %[5]s
			verifier peer {
				crl %[6]s
				crl_soft_fail
			}
		}
	}
	forward_peer_identity {
		client_cert
		client_cert_chain
	}
	reverse_proxy %[7]s
}
https://localhost:%[2]s {
	tls %[3]s %[4]s {
		client_auth {
			verifier live_trust bundle %[5]s
			verifier peer {
				crl_distribution_points
				crl_soft_fail
			}
		}
	}
	respond "in"
}
`, bench.Port(files), bench.Port(dps), p.srvCert, p.srvKey, p.rootFile, crlFile, strings.TrimPrefix(backend.URL, "http://")))

	cl := chainClient{serverCA: p.root.Pool()}
	refused := func(name string, leaf *testpki.Leaf, chain ...*x509.Certificate) {
		t.Helper()
		if code, body, err := cl.get(files, "/", leaf, chain...); err == nil {
			t.Errorf("%s: accepted (%d %q)", name, code, body)
		}
	}
	refused("revoked leaf sent without its chain", revokedLeaf)
	refused("revoked leaf behind a forged issuer, crl_soft_fail", revokedLeaf, forgedRoot.Cert)
	refused("leaf under a revoked intermediate", underRevoked, revokedInter.Cert)

	code, body, err := cl.get(files, "/", goodLeaf, forgedRoot.Cert)
	if err != nil || code != 200 {
		t.Fatalf("a good leaf with junk appended: %d %q %v", code, body, err)
	}
	h := decodeHeaders(t, body)
	want := ":" + base64.StdEncoding.EncodeToString(root.Cert.Raw) + ":"
	if got := h.Get("Client-Cert-Chain"); got != want {
		t.Fatalf("Client-Cert-Chain = %.80q..., want the verified root only (the client's self-made root must not be forwarded)", got)
	}

	for range 3 {
		if code, _, err := cl.get(dps, "/", goodLeaf, junk.Cert, junkCA.Cert); err != nil || code != 200 {
			t.Fatalf("good leaf with junk appended: %d %v", code, err)
		}
	}
	if n := dpHits.Load(); n != 0 {
		t.Fatalf("the server fetched a distribution point the client chose, %d times", n)
	}
}
