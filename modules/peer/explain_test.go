package peer

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
	"github.com/trustline/trustline/modules/verify"
)

// TestVerifierTraced: under explain (a trace attached to the leaf's
// buffer) the verifier reaches the verdict it reaches at a handshake, and
// tells it, pattern by pattern and CRL by CRL, instead of logging and
// counting it.
func TestVerifierTraced(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	alice := ca.Issue(t, testpki.URI("spiffe://example.org/ops/alice"))
	bob := ca.Issue(t, testpki.URI("spiffe://example.org/dev/bob"))
	gone := ca.Issue(t, testpki.URI("spiffe://example.org/ops/gone"))
	crl := testpki.WriteFile(t, t.TempDir(), "root.crl", revocationtest.PEM(revocationtest.CRL(t, ca, time.Now().Add(time.Hour), gone.Cert)))
	v := &Verifier{Revocation: &revocation.Revocation{CRLFiles: []string{crl}}}
	v.SPIFFEID = []string{"spiffe://example.org/ops/*"}
	provisioned(t, v)
	t.Cleanup(func() { _ = v.Cleanup() })
	logs := observedLogger(&v.logger)
	refused := func() float64 {
		var m dto.Metric
		if err := peerDecisions.WithLabelValues("verifier", "refused").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}

	for _, tc := range []struct {
		leaf    *testpki.Leaf
		verdict string
		reason  string
		check   string
	}{
		{alice, verify.VerdictAdmitted, "", "yes"},
		{bob, verify.VerdictRefused, verify.ReasonNotAllowed, "no"},
		{gone, verify.VerdictRefused, verify.ReasonRevoked, ""},
	} {
		raw := append([]byte(nil), tc.leaf.Cert.Raw...)
		leaf, err := x509.ParseCertificate(raw)
		if err != nil {
			t.Fatal(err)
		}
		tr := new(verify.Trace)
		detach := verify.AttachTrace(raw, tr)
		before := refused()
		err = v.VerifyClientCertificate([][]byte{raw}, [][]*x509.Certificate{{leaf, ca.Cert}})
		detach()
		if (err == nil) != (tc.verdict == verify.VerdictAdmitted) {
			t.Fatalf("%s: %v", tc.leaf.Cert.URIs[0], err)
		}
		steps := tr.Steps()
		last := steps[len(steps)-1]
		if last.Name != "peer" || last.Verdict != tc.verdict || last.Reason != tc.reason {
			t.Fatalf("%s: steps %+v", tc.leaf.Cert.URIs[0], steps)
		}
		if tc.check != "" && (len(last.Checks) != 1 || last.Checks[0].OK != (tc.check == "yes") || last.Checks[0].Want != "spiffe://example.org/ops/*") {
			t.Fatalf("%s: checks %+v", tc.leaf.Cert.URIs[0], last.Checks)
		}
		if tc.reason == verify.ReasonRevoked && (steps[0].Stage != "revocation" || !strings.Contains(steps[0].Checks[0].Want, "number ")) {
			t.Fatalf("revocation step: %+v", steps[0])
		}
		if refused() != before || strings.Contains(logs.last(), "refused") {
			t.Fatalf("%s: counted or logged under explain: %s", tc.leaf.Cert.URIs[0], logs.last())
		}
	}
	// the same refusal outside explain is logged and counted
	before := refused()
	if err := v.VerifyClientCertificate([][]byte{bob.Cert.Raw}, [][]*x509.Certificate{{bob.Cert, ca.Cert}}); err == nil {
		t.Fatal("bob admitted")
	}
	if refused() != before+1 || !strings.Contains(logs.last(), `"reason":"not_allowed"`) {
		t.Fatalf("a real refusal: counted %v, log %s", refused()-before, logs.last())
	}
}

// TestPatternChecks: one check per pattern, which tells the pattern that
// matched and, for each field, the value that did not.
func TestPatternChecks(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.URI("spiffe://example.org/ops/alice"), testpki.DNS("alice.example.org"))
	p := Patterns{SPIFFEID: []string{"spiffe://example.org/dev/*", "spiffe://example.org/ops/*"}, DNS: []string{"*.internal"}}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	id := NewIdentity(leaf.Cert, nil)
	got := p.Checks(id)
	want := []bool{false, true, false}
	if len(got) != 3 {
		t.Fatalf("%+v", got)
	}
	for i := range want {
		if got[i].OK != want[i] {
			t.Fatalf("check %d: %+v", i, got[i])
		}
	}
	if got[2].Have != "alice.example.org" || got[2].Name != "dns" {
		t.Fatalf("%+v", got[2])
	}
	if ok, _ := p.Match(id); ok {
		t.Fatal("the dns field does not match: the patterns must not")
	}
	for _, c := range p.Checks(nil) {
		if c.OK || c.Have != "no verified identity" {
			t.Fatalf("nil identity: %+v", c)
		}
	}
}
