package revocation

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/ocsp"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
	"github.com/trustline/trustline/modules/verify"
)

// TestVerifyTracedFetchesNothing: under explain, a CRL distribution point
// and an OCSP responder that nothing cached are not asked (explain
// fetches nothing a client names); the step says so, as unknown, and
// nothing is counted. Once a real handshake cached them, explain tells
// the cached answer, naming the CRL with its number and nextUpdate.
func TestVerifyTracedFetchesNothing(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	crlSrv := revocationtest.NewCRLServer(t, revocationtest.CRL(t, ca, time.Now().Add(time.Hour)))
	leaf := ca.Issue(t, testpki.CN("alice"), revocationtest.DistributionPoint(crlSrv.URL+"/root.crl"))
	chain := []*x509.Certificate{leaf.Cert, ca.Cert}
	r := &Revocation{DistributionPoints: true}
	provisionRevocation(t, r)

	counted := func() float64 { return counterSum(t, revocationChecks) }
	before := counted()
	tr := new(verify.Trace)
	refuse, _, _ := r.VerifyTraced(chain, tr)
	if refuse == nil || !NotFetched(refuse) || crlSrv.Hits.Load() != 0 {
		t.Fatalf("refuse %v, downloads %d: explain fetched, or did not say it does not", refuse, crlSrv.Hits.Load())
	}
	steps := tr.Steps()
	if len(steps) != 1 || steps[0].Verdict != verify.VerdictUnknown || steps[0].Reason != verify.ReasonRevocationUnknown ||
		!strings.Contains(steps[0].Detail, "explain fetches nothing") {
		t.Fatalf("steps: %+v", steps)
	}
	if counted() != before {
		t.Fatal("an explained check was counted")
	}

	// a real handshake fetches and caches it; explain reads the cache
	if refuse, _, _ := r.VerifyTraced(chain, nil); refuse != nil || crlSrv.Hits.Load() != 1 {
		t.Fatalf("real check: %v, downloads %d", refuse, crlSrv.Hits.Load())
	}
	tr = new(verify.Trace)
	if refuse, _, _ := r.VerifyTraced(chain, tr); refuse != nil {
		t.Fatal(refuse)
	}
	steps = tr.Steps()
	if len(steps) != 1 || steps[0].Verdict != verify.VerdictAdmitted || len(steps[0].Checks) == 0 ||
		!strings.Contains(steps[0].Checks[0].Want, "number ") || !strings.Contains(steps[0].Checks[0].Want, "nextUpdate ") {
		t.Fatalf("steps: %+v", steps)
	}
	if crlSrv.Hits.Load() != 1 {
		t.Fatal("explain fetched")
	}

	// OCSP: nothing cached, nothing asked
	resp := revocationtest.NewResponder(t, ca, time.Now)
	bob := ca.Issue(t, testpki.CN("bob"), aia(resp.URL))
	resp.Set(bob.Cert, ocsp.Revoked)
	o := provisionOCSP(t, &OCSP{}, nil)
	withOCSP := &Revocation{OCSP: o}
	tr = new(verify.Trace)
	refuse, _, _ = withOCSP.VerifyTraced([]*x509.Certificate{bob.Cert, ca.Cert}, tr)
	if !NotFetched(refuse) || len(resp.Methods()) != 0 {
		t.Fatalf("OCSP under explain: %v, queries %v", refuse, resp.Methods())
	}
	if refuse, _, _ := withOCSP.VerifyTraced([]*x509.Certificate{bob.Cert, ca.Cert}, nil); refuse == nil {
		t.Fatal("bob is revoked")
	}
	tr = new(verify.Trace)
	refuse, _, _ = withOCSP.VerifyTraced([]*x509.Certificate{bob.Cert, ca.Cert}, tr)
	if refuse == nil || NotFetched(refuse) || tr.Steps()[0].Reason != verify.ReasonRevoked || len(resp.Methods()) != 1 {
		t.Fatalf("cached revoked answer: %v %+v, queries %v", refuse, tr.Steps(), resp.Methods())
	}
}

// counterSum is the sum of a counter vector's series.
func counterSum(t *testing.T, c interface {
	Collect(chan<- prometheus.Metric)
}) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	sum := 0.0
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		sum += pb.GetCounter().GetValue()
	}
	return sum
}
