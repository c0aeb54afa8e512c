package integration

import (
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
)

// TestCRLFileFollowed: a CRL file is followed like a truststore. An
// operator who replaces it to revoke a stolen client certificate has it in
// force within 2 seconds, with no reload: the client's next handshake is
// refused, and its keep-alive connection, verified before, is closed (a
// revocation reaches open connections; before, it kept its access). A broken new file
// is refused with the file and the reason, counted, and the last good CRL
// stays in force.
func TestCRLFileFollowed(t *testing.T) {
	p := newPeerPKI(t)
	alice := p.leaves["alice"]
	crlFile := filepath.Join(p.dir, "issuing.crl")
	writeCRL := func(data []byte) {
		t.Helper()
		tmp := crlFile + ".new"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, crlFile); err != nil { // as an operator's deploy would
			t.Fatal(err)
		}
	}
	writeCRL(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: peerCRL(t, p.inter)}))
	site := bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[2]s %[3]s {
		client_auth {
			trust_pool file %[4]s
			verifier peer {
				crl %[5]s
			}
		}
	}
	respond "hello {http.request.tls.client.subject}"
}
`, bench.Port(site), p.srvCert, p.srvKey, p.rootFile, crlFile))

	url := "https://localhost:" + bench.Port(site) + "/"
	clientTLS := &tls.Config{RootCAs: p.root.Pool(), Certificates: []tls.Certificate{alice.TLS()}}
	get := func(tr *http.Transport) error {
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	fresh := func() error {
		tr := &http.Transport{TLSClientConfig: clientTLS.Clone(), DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		return get(tr)
	}
	keepAlive := &http.Transport{TLSClientConfig: clientTLS.Clone()}
	defer keepAlive.CloseIdleConnections()
	if err := get(keepAlive); err != nil {
		t.Fatalf("alice before the CRL revokes her: %v", err)
	}

	writeCRL(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: peerCRL(t, p.inter, alice.Cert)}))
	swapped := time.Now()
	eventually(t, 2*time.Second, "alice's next handshake refused after the CRL swap", func() (bool, string) {
		err := fresh()
		return err != nil, fmt.Sprintf("accepted %s after the swap", time.Since(swapped))
	})
	t.Logf("the new CRL was in force %s after the swap", time.Since(swapped).Round(time.Millisecond))
	if err := get(keepAlive); err == nil {
		t.Error("alice's keep-alive connection, verified before the swap, still gets 200 after her revocation")
	}
	c.WaitLog(t, `"msg":"connection closed: its peer's verification no longer holds"`, 2*time.Second)
	c.WaitLog(t, `"reason":"revoked"`, time.Second)

	// a truncated new file: refused, named, counted; the last good CRL stays
	good := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: peerCRL(t, p.inter, alice.Cert)})
	writeCRL(good[:len(good)/2])
	// the refusal is the event: once logged, the truncated version has
	// been read and turned down, and the next handshake shows what is in
	// force
	c.WaitLog(t, `"msg":"reload failed; keeping the last good version"`, 5*time.Second)
	c.WaitLog(t, `"source":"`+crlFile+`"`, time.Second)
	if err := fresh(); err == nil {
		t.Fatal("a truncated CRL file dropped the last good CRL: alice accepted again")
	}
	m := c.Metrics(t)
	if v := metricValue(t, m, fmt.Sprintf(`trustline_material_reloads_total{kind="crl",result="failed",source=%q}`, crlFile)); v < 1 {
		t.Errorf("the refused CRL was not counted (%v)", v)
	}
	if v := metricValue(t, m, fmt.Sprintf(`trustline_material_not_after_timestamp_seconds{kind="crl",source=%q}`, crlFile)); v < float64(time.Now().Unix()) {
		t.Errorf("the CRL's nextUpdate gauge is %v", v)
	}
}
