package integration

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// The CRL successor rule through the real binary: a CRL, fetched from a
// distribution point or read from a file, takes over from the one in
// force only when its issuer signed it and it is not older (CRL number,
// thisUpdate). Whoever runs or sits on the path of a plain-HTTP
// distribution point, or writes the CRL file, cannot roll a revocation
// back or make the issuer's clients "unavailable".

// logLines counts the log lines holding every one of parts.
func logLines(log string, parts ...string) int {
	n := 0
lines:
	for _, l := range strings.Split(log, "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue lines
			}
		}
		n++
	}
	return n
}

// TestCRLDistributionPointSuccessor: two sites check the same issuer's
// clients against its distribution point, one failing closed, one with
// crl_soft_fail. The distribution point then serves an older, validly
// signed CRL (which would un-revoke the revoked client), a CRL with a bad
// signature, and the root's CRL instead of the issuer's: the revoked
// client stays refused on both sites, the good one admitted, and each
// refusal is logged once per site and counted, however often it is
// fetched again. A good successor is then in force at the next refresh.
func TestCRLDistributionPointSuccessor(t *testing.T) {
	p := newPeerPKI(t)
	older := peerCRL(t, p.inter) // a lower CRL number than what follows
	type site struct {
		name      string
		addr      string
		dp        *revocationtest.CRLServer
		ok, revkd *testpki.Leaf
	}
	var sites []*site
	for _, name := range []string{"hard", "soft"} {
		s := &site{name: name, addr: bench.FreeAddr(t), dp: revocationtest.NewCRLServer(t, nil)}
		withDP := revocationtest.DistributionPoint(s.dp.URL + "/issuing.crl")
		s.ok = p.inter.Issue(t, testpki.CN(name+"-ok"), testpki.ClientOnly(), withDP)
		s.revkd = p.inter.Issue(t, testpki.CN(name+"-revoked"), testpki.ClientOnly(), withDP)
		s.dp.Serve(peerCRL(t, p.inter, s.revkd.Cert))
		sites = append(sites, s)
	}
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
			verifier peer {
				crl_distribution_points
				crl_refresh 1s
			}
		}
	}
	respond "in"
}
https://localhost:%[2]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
			verifier peer {
				crl_distribution_points
				crl_refresh 1s
				crl_soft_fail
			}
		}
	}
	respond "in"
}
`, bench.Port(sites[0].addr), bench.Port(sites[1].addr), p.srvCert, p.srvKey, p.rootFile))

	cl := chainClient{serverCA: p.root.Pool()}
	check := func(when string) {
		t.Helper()
		for _, s := range sites {
			if code, body, err := cl.get(s.addr, "/", s.ok, p.inter.Cert); err != nil || code != 200 {
				t.Fatalf("%s: %s site: the good client: %d %q %v", when, s.name, code, body, err)
			}
			if code, body, err := cl.get(s.addr, "/", s.revkd, p.inter.Cert); err == nil {
				t.Fatalf("%s: %s site: the revoked client got through: %d %q", when, s.name, code, body)
			}
		}
	}
	check("the issuer's CRL")

	for _, step := range []struct {
		name, reason string
		der          []byte
	}{
		{"an older CRL", "number", older},
		{"a bad signature", "signature", revocationtest.BadSignature(peerCRL(t, p.inter))},
		{"the root's CRL", "issuer", peerCRL(t, p.root)},
	} {
		for _, s := range sites {
			s.dp.Serve(step.der)
		}
		for _, s := range sites {
			s.dp.Refreshed(t, 10*time.Second)
		}
		check("after " + step.name)
		for _, s := range sites {
			s.dp.Refreshed(t, 10*time.Second) // fetched again: neither logged nor counted again
		}
		for _, s := range sites {
			if n := logLines(c.Log(), `"msg":"CRL refused; keeping the last good one"`, `"source":"`+s.dp.URL+`/issuing.crl"`, `"reason":"`+step.reason+`"`); n != 1 {
				t.Errorf("%s: %s site: %d refusal log lines with reason %s, want 1", step.name, s.name, n, step.reason)
			}
		}
		sample := fmt.Sprintf(`trustline_peer_crl_refused_total{origin="distribution_point",reason=%q}`, step.reason)
		if v := metricValue(t, c.Metrics(t), sample); v != 2 {
			t.Errorf("%s: %s = %v, want 2 (once per site)", step.name, sample, v)
		}
	}

	// a good successor revoking the good clients too is in force at the
	// next refresh
	for _, s := range sites {
		s.dp.Serve(peerCRL(t, p.inter, s.ok.Cert, s.revkd.Cert))
	}
	for _, s := range sites {
		eventually(t, 10*time.Second, s.name+" site: the good client refused by the next good CRL", func() (bool, string) {
			code, _, err := cl.get(s.addr, "/", s.ok, p.inter.Cert)
			return err != nil, fmt.Sprintf("status %d", code)
		})
	}
}

// TestCRLFileSuccessorBeforeFirstHandshake: a CRL file replaced before any
// client has connected (so before the verifier has met the issuer's
// certificate) by an older CRL of the issuer, then by one an impostor of
// the issuer signed, then by the root's CRL alone: none takes over. The
// first handshakes check them against the issuer of their chain: the
// revoked client is refused on the site that fails closed and on the one
// with crl_soft_fail, the good client admitted on both, and each refused
// CRL is logged once and counted.
func TestCRLFileSuccessorBeforeFirstHandshake(t *testing.T) {
	p := newPeerPKI(t)
	alice, bob := p.leaves["alice"], p.leaves["bob"]
	older := peerCRL(t, p.inter) // a lower CRL number than what follows
	crlFile := filepath.Join(p.dir, "issuing.crl")
	write := func(der []byte) {
		t.Helper()
		tmp := crlFile + ".new"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, crlFile); err != nil {
			t.Fatal(err)
		}
	}
	write(peerCRL(t, p.inter, bob.Cert))
	hard, soft := bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
			verifier peer {
				crl %[6]s
			}
		}
	}
	respond "in"
}
https://localhost:%[2]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
			verifier peer {
				crl %[6]s
				crl_soft_fail
			}
		}
	}
	respond "in"
}
`, bench.Port(hard), bench.Port(soft), p.srvCert, p.srvKey, p.rootFile, crlFile))

	// a version is read when the reload counter moves (ok: read, its CRLs
	// handed to the successor rule; failed: refused by the reader)
	reloads := func() float64 {
		m := c.Metrics(t)
		return metricValue(t, m, fmt.Sprintf(`trustline_material_reloads_total{kind="crl",result="ok",source=%q}`, crlFile)) +
			metricValue(t, m, fmt.Sprintf(`trustline_material_reloads_total{kind="crl",result="failed",source=%q}`, crlFile))
	}
	impostor := testpki.NewCA(t, p.inter.Cert.Subject.CommonName, testpki.Org(p.inter.Cert.Subject.Organization...))
	for i, der := range [][]byte{older, peerCRL(t, impostor), peerCRL(t, p.root)} {
		write(der)
		eventually(t, 5*time.Second, fmt.Sprintf("version %d of the CRL file read", i+2), func() (bool, string) {
			n := reloads()
			return n >= float64(i+2), fmt.Sprintf("%v reloads", n)
		})
	}

	cl := chainClient{serverCA: p.root.Pool()}
	for _, addr := range []string{hard, soft} {
		if code, body, err := cl.get(addr, "/", alice, p.inter.Cert); err != nil || code != 200 {
			t.Fatalf("site %s: alice: %d %q %v", addr, code, body, err)
		}
		if code, body, err := cl.get(addr, "/", bob, p.inter.Cert); err == nil {
			t.Fatalf("site %s: revoked bob got through: %d %q", addr, code, body)
		}
	}
	m := c.Metrics(t)
	for _, reason := range []string{"number", "signature", "issuer"} {
		if n := logLines(c.Log(), `"msg":"CRL refused; keeping the last good one"`, `"source":"`+crlFile+`"`, `"reason":"`+reason+`"`); n != 1 {
			t.Errorf("%d refusal log lines with reason %s, want 1", n, reason)
		}
		sample := fmt.Sprintf(`trustline_peer_crl_refused_total{origin="file",reason=%q}`, reason)
		if v := metricValue(t, m, sample); v != 1 {
			t.Errorf("%s = %v, want 1", sample, v)
		}
	}
}
