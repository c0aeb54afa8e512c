package integration

import (
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// ocspIndexLine is one line of an openssl CA database (index.txt, see
// openssl-ca(1)): status (V valid, R revoked), expiry, revocation
// date[,reason], serial in hex, file name, subject.
func ocspIndexLine(c *x509.Certificate, revoked bool) string {
	const layout = "060102150405Z"
	status, rev := "V", ""
	if revoked {
		status, rev = "R", time.Now().Add(-time.Hour).UTC().Format(layout)+",keyCompromise"
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\tunknown\t/CN=%s\n", status, c.NotAfter.UTC().Format(layout), rev,
		strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes())), c.Subject.CommonName)
}

// startOpenSSLOCSP runs `openssl ocsp` as the responder for ca's
// certificates on addr, signing with a delegated responder certificate
// (OCSPSigning) that ca issues.
func startOpenSSLOCSP(t *testing.T, dir, name, addr string, ca *testpki.CA, index string) *bench.Process {
	t.Helper()
	signer := ca.Issue(t, testpki.CN(name+" OCSP responder"), testpki.EKU(x509.ExtKeyUsageOCSPSigning))
	signerCert, signerKey := signer.WriteFiles(t, dir, name+"-ocsp")
	caFile := testpki.WriteFile(t, dir, name+"-ca.pem", ca.CertPEM())
	indexFile := testpki.WriteFile(t, dir, name+"-index.txt", []byte(index))
	bench.Need(t, "openssl")
	// openssl 3.0 takes a port only for -port (it listens on every address)
	p := bench.StartProcess(t, "openssl", "ocsp", "-index", indexFile, "-port", bench.Port(addr),
		"-rsigner", signerCert, "-rkey", signerKey, "-CA", caFile, "-nmin", "10")
	// not bench.WaitPort: this single-threaded responder hangs for good on
	// a connection that closes without a request; it prints this once it
	// listens
	p.WaitLog(t, "waiting for OCSP client connections", 10*time.Second)
	return p
}

// TestPeerOCSP: the handshake verifier asks the real `openssl ocsp`
// responders named in the client certificates: a good certificate gets
// 200, a revoked one is refused at the handshake; with the responder
// stopped, a certificate not yet checked is refused (fail closed) where
// ocsp_soft_fail is off and let through where it is on, and one already
// checked is served from the cache.
func TestPeerOCSP(t *testing.T) {
	dir := t.TempDir()
	rootOCSP, leafOCSP := bench.FreeAddr(t), bench.FreeAddr(t)
	root := testpki.NewCA(t, "OCSP Root", testpki.Org("Example"))
	// the intermediate names the root's responder: `ocsp` (whole chain)
	// asks it about the intermediate
	inter := root.NewIntermediate(t, "OCSP Issuing CA", testpki.Org("Example"), testpki.OCSPServer("http://"+rootOCSP))
	rootFile := testpki.WriteFile(t, dir, "root.pem", root.CertPEM())
	srv := inter.Issue(t, testpki.CN("localhost"), testpki.DNS("localhost"), testpki.IP("127.0.0.1"), testpki.ServerOnly())
	srvCert, srvKey := srv.WriteFiles(t, dir, "server")
	leaves := map[string]*testpki.Leaf{}
	files := map[string][2]string{}
	for _, name := range []string{"alice", "bob", "carol"} {
		leaves[name] = inter.Issue(t, testpki.CN(name), testpki.ClientOnly(), testpki.OCSPServer("http://"+leafOCSP))
		c, k := leaves[name].WriteFiles(t, dir, name)
		files[name] = [2]string{c, k}
	}
	rootResponder := startOpenSSLOCSP(t, dir, "root", rootOCSP, root, ocspIndexLine(inter.Cert, false))
	leafResponder := startOpenSSLOCSP(t, dir, "inter", leafOCSP, inter,
		ocspIndexLine(leaves["alice"].Cert, false)+ocspIndexLine(leaves["bob"].Cert, true)+ocspIndexLine(leaves["carol"].Cert, false))

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
				ocsp
				ocsp_fetch_timeout 3s
			}
		}
	}
	peer_identity
	respond "hello {peer.subject.cn}"
}
https://localhost:%[2]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
			verifier peer {
				ocsp leaf
				ocsp_soft_fail
			}
		}
	}
	peer_identity
	respond "hello {peer.subject.cn}"
}
`, bench.Port(hard), bench.Port(soft), srvCert, srvKey, rootFile))

	get := func(client, addr string) (string, string, int) {
		return bench.Curl(t, "--cacert", rootFile, "--cert", files[client][0], "--key", files[client][1], "https://localhost:"+bench.Port(addr)+"/")
	}
	if body, errOut, code := get("alice", hard); code != 0 || body != "hello alice" {
		t.Fatalf("alice: exit %d, %q, %s", code, body, errOut)
	}
	if body, errOut, code := get("bob", hard); code == 0 || body != "" {
		t.Fatalf("revoked bob got through: %q", body)
	} else {
		t.Logf("bob refused: curl exit %d: %s", code, strings.TrimSpace(errOut))
	}
	c.WaitLog(t, "is revoked by the OCSP responder http://"+leafOCSP, 5*time.Second)
	if strings.Contains(c.Log(), "OCSP query failed") {
		t.Fatal("a query to a running openssl responder failed (see the log)")
	}
	// `ocsp` checked the intermediate with the root's responder too
	if !strings.Contains(rootResponder.Log(), "Received request") {
		t.Fatal("the root's responder was never asked about the intermediate")
	}
	if body, _, code := get("bob", soft); code == 0 || body != "" {
		t.Fatalf("revoked bob got through the soft-fail site: %q", body)
	}

	// the responder goes away
	leafResponder.Stop()
	if body, _, code := get("carol", hard); code == 0 || body != "" {
		t.Fatalf("carol got through with the responder down and no soft fail: %q", body)
	}
	c.WaitLog(t, `OCSP status unavailable for certificate \"CN=carol\"`, 5*time.Second) // JSON-escaped
	if body, errOut, code := get("carol", soft); code != 0 || body != "hello carol" {
		t.Fatalf("carol with ocsp_soft_fail: exit %d, %q, %s", code, body, errOut)
	}
	c.WaitLog(t, "letting the client through (ocsp_soft_fail)", 5*time.Second)
	// alice's good answer is cached until its nextUpdate (10 minutes)
	if body, errOut, code := get("alice", hard); code != 0 || body != "hello alice" {
		t.Fatalf("alice from the cache: exit %d, %q, %s", code, body, errOut)
	}
	// bob's revocation too, on both sites
	if body, _, code := get("bob", soft); code == 0 || body != "" {
		t.Fatalf("revoked bob got through the soft-fail site with the responder down: %q", body)
	}

	// every outcome is counted where an operator looks
	m := c.Metrics(t)
	for sample, atLeast := range map[string]float64{
		`trustline_peer_revocation_checks_total{method="ocsp",result="good"}`:        2,
		`trustline_peer_revocation_checks_total{method="ocsp",result="revoked"}`:     3,
		`trustline_peer_revocation_checks_total{method="ocsp",result="unavailable"}`: 1,
		`trustline_peer_revocation_checks_total{method="ocsp",result="soft_fail"}`:   1,
		`trustline_peer_decisions_total{outcome="refused",where="verifier"}`:         4,
	} {
		if v := metricValue(t, m, sample); v < atLeast {
			t.Errorf("%s = %v, want at least %v", sample, v, atLeast)
		}
	}
}
