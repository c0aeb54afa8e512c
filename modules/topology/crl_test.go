package topology_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/topology"
)

// makeCRL is a CRL by ca with the given number and update times, revoking
// the given certificates.
func makeCRL(t testing.TB, ca *testpki.CA, number int64, thisUpdate, nextUpdate time.Time, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func crlPEM(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}) }

// TestCRLFindings: a peer verifier's CRL files are listed on the inbound
// leg with their issuer and next update; one past its next update is an
// error (the certificates it covers are refused), a warning with
// crl_soft_fail (they are accepted unchecked) or with shadow; a file that
// gives no CRL is an error; a fresh CRL is no finding.
func TestCRLFindings(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Clients CA")
	other := testpki.NewCA(t, "Partner CA")
	revoked := ca.Issue(t, testpki.CN("stolen"), testpki.ClientOnly())
	fresh := testpki.WriteFile(t, dir, "fresh.crl", crlPEM(makeCRL(t, ca, 7, day(-1), day(6), revoked.Cert)))
	stale := testpki.WriteFile(t, dir, "stale.der", makeCRL(t, other, 3, day(-9), day(-2)))
	broken := testpki.WriteFile(t, dir, "broken.crl", ca.CertPEM())
	testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	policy := func(host, revocation string) string {
		return `{"match":{"sni":["` + host + `"]},"client_authentication":{"trusted_ca_certs_pem_files":["` + dir + `/ca.pem"],
			"verifiers":[{"verifier":"peer","common_name":["*"],"revocation":` + revocation + `}]}}`
	}
	crls := `"crl_files":["` + fresh + `","` + stale + `","` + broken + `"]`
	cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":8443"],"tls_connection_policies":[` +
		policy("a.test", `{`+crls+`}`) + `,` +
		policy("b.test", `{`+crls+`,"soft_fail":true}`) + `],
		"routes":[{"match":[{"host":["a.test"]}],"handle":[{"handler":"static_response"}]},{"match":[{"host":["b.test"]}],"handle":[{"handler":"static_response"}]}]}}}}}`
	rep, err := topology.Analyze([]byte(cfg), topology.Options{Now: goldenNow})
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]topology.Finding{}
	for _, f := range rep.Findings {
		if strings.HasPrefix(f.Kind, "crl_") {
			byPath[f.Kind+" "+f.Path] = f
		}
	}
	vp := func(i int) string {
		return "apps.http.servers.s.tls_connection_policies[" + strconv.Itoa(i) + "].client_authentication.verifiers[0].revocation.crl_files"
	}
	for _, tc := range []struct {
		key  string
		sev  topology.Severity
		says []string
	}{
		{topology.KindCRLExpired + " " + vp(0) + "[1]", topology.SeverityError, []string{stale, "CN=Partner CA", "2030-05-30 00:00Z", "refused"}},
		{topology.KindCRLExpired + " " + vp(1) + "[1]", topology.SeverityWarning, []string{stale, "CN=Partner CA", "crl_soft_fail", "accepted without a revocation check"}},
		{topology.KindCRLNotRead + " " + vp(0) + "[2]", topology.SeverityError, []string{broken, "X509 CRL"}},
	} {
		f, ok := byPath[tc.key]
		if !ok {
			t.Errorf("no finding %s in %v", tc.key, rep.Findings)
			continue
		}
		if f.Severity != tc.sev {
			t.Errorf("%s: severity %s, want %s", tc.key, f.Severity, tc.sev)
		}
		for _, s := range tc.says {
			if !strings.Contains(f.Message+" "+f.Fix, s) {
				t.Errorf("%s does not say %q: %s / %s", tc.key, s, f.Message, f.Fix)
			}
		}
	}
	for key := range byPath {
		if strings.HasSuffix(key, "[0]") {
			t.Errorf("a fresh CRL gave a finding: %s", key)
		}
	}

	ca0 := rep.Listeners[0].Routes[0].Inbound.ClientAuth
	if ca0 == nil || len(ca0.CRLs) != 3 {
		t.Fatalf("the inbound leg lists %+v, want the 3 CRL files", ca0)
	}
	if c := ca0.CRLs[0]; c.Issuer != "CN=Clients CA" || c.Revoked != 1 || c.Number != "7" || c.NextUpdate == nil || !c.NextUpdate.Equal(day(6)) {
		t.Errorf("fresh CRL: %+v", c)
	}
	if c := ca0.CRLs[1]; c.Issuer != "CN=Partner CA" || c.NextUpdate == nil || !c.NextUpdate.Equal(day(-2)) {
		t.Errorf("stale CRL: %+v", c)
	}
	if c := ca0.CRLs[2]; c.NotRead == "" || c.NextUpdate != nil {
		t.Errorf("broken CRL file: %+v", c)
	}

	// the picture: one block per CRL, coloured by its next update
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg, topology.SVGOptions{Now: goldenNow}); err != nil {
		t.Fatal(err)
	}
	for file, expiry := range map[string]string{fresh: "ok", stale: "expired", broken: "unknown"} {
		if !strings.Contains(svg.String(), `data-crl="`+file+`" data-path="`+vp(0)) || !strings.Contains(svg.String(), `data-crl="`+file+`" data-path="`+vp(0)+map[string]string{fresh: "[0]", stale: "[1]", broken: "[2]"}[file]+`" data-expiry="`+expiry+`"`) {
			t.Errorf("the picture does not draw %s as %s", file, expiry)
		}
	}
}

// TestCRLFindingsShadowAndUse: a peer verifier in shadow mode, or one told
// to keep using an expired CRL (expired "use"), refuses no handshake for
// it: a warning.
func TestCRLFindingsShadowAndUse(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Clients CA")
	stale := testpki.WriteFile(t, dir, "stale.crl", crlPEM(makeCRL(t, ca, 1, day(-9), day(-2))))
	for name, v := range map[string]string{
		"shadow": `{"verifier":"peer","shadow":true,"common_name":["*"],"revocation":{"crl_files":["` + stale + `"]}}`,
		"use":    `{"verifier":"peer","common_name":["*"],"revocation":{"crl_files":["` + stale + `"],"expired":"use"}}`,
	} {
		cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":8443"],"tls_connection_policies":[{"client_authentication":{"trusted_ca_certs_pem_files":["` +
			ca.Cert.Subject.CommonName + `.pem"],"verifiers":[` + v + `]}}],"routes":[{"handle":[{"handler":"static_response"}]}]}}}}}`
		rep, err := topology.Analyze([]byte(cfg), topology.Options{Now: goldenNow})
		if err != nil {
			t.Fatal(err)
		}
		if got := findingKinds(rep)[topology.KindCRLExpired]; got != topology.SeverityWarning {
			t.Errorf("%s: crl_expired %q, want warning", name, got)
		}
	}
}
