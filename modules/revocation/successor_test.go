package revocation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// provisionObserved provisions r with a logger whose lines the test reads,
// and returns them with the config's metrics registry.
func provisionObserved(t *testing.T, r *Revocation) (*observer.ObservedLogs, prometheus.Gatherer) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	core, logs := observer.New(zap.DebugLevel)
	if err := r.Provision(ctx, zap.New(core)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Cleanup)
	return logs, ctx.GetMetricsRegistry()
}

// metric is the value of the sample of name whose labels include want (0
// when there is none).
func metric(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue samples
				}
			}
			return sampleValue(m)
		}
	}
	return 0
}

func sampleValue(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// refusedCount is how many CRLs of origin the successor rule refused for
// reason.
func refusedCount(t *testing.T, g prometheus.Gatherer, origin, reason string) float64 {
	return metric(t, g, "trustline_peer_crl_refused_total", map[string]string{"origin": origin, "reason": reason})
}

// reloads is the material reload counter of a CRL file.
func reloads(t *testing.T, g prometheus.Gatherer, file, result string) float64 {
	return metric(t, g, "trustline_material_reloads_total", map[string]string{"kind": "crl", "source": file, "result": result})
}

// successorCase is a CRL that may not succeed the good CRL of ca in force:
// an older validly signed CRL, one with a bad signature, one by another CA
// (the root above ca), one by an impostor with ca's name and another key,
// one without a CRL number, one with a higher number but an older
// thisUpdate. None revokes anyone. reason is the metric label of the
// refusal.
type successorCase struct {
	name, reason string
	crl          []byte
}

var successorCaseNames = []string{"an older CRL", "a bad signature", "another CA's CRL", "an impostor's CRL", "no CRL number", "an older thisUpdate"}

// newSuccessorCase makes the case named name and the good CRL (revoking
// revoked) it may not succeed. Only the older CRL has a lower number than
// the good one: the forged ones have higher numbers, as a forger would
// give them.
func newSuccessorCase(t *testing.T, name string, root, ca *testpki.CA, revoked *x509.Certificate) (good []byte, c successorCase) {
	t.Helper()
	week := time.Now().Add(7 * 24 * time.Hour)
	ago := time.Now().Add(-time.Minute)
	c.name = name
	if name == "an older CRL" {
		c.reason, c.crl = "number", revocationtest.CRL(t, ca, week)
	}
	good = revocationtest.CRLOf(t, ca, revocationtest.NextNumber(), ago, week, revoked)
	switch name {
	case "an older CRL":
	case "a bad signature":
		c.reason, c.crl = "signature", revocationtest.BadSignature(revocationtest.CRL(t, ca, week))
	case "another CA's CRL":
		c.reason, c.crl = "issuer", revocationtest.CRL(t, root, week)
	case "an impostor's CRL":
		c.reason, c.crl = "signature", revocationtest.CRL(t, root.NewIntermediate(t, ca.Cert.Subject.CommonName), week)
	case "no CRL number":
		c.reason, c.crl = "number_missing", revocationtest.CRLOf(t, ca, nil, ago, week)
	case "an older thisUpdate":
		c.reason, c.crl = "this_update", revocationtest.CRLOf(t, ca, revocationtest.NextNumber(), ago.Add(-time.Hour), week)
	default:
		t.Fatalf("no case %q", name)
	}
	return good, c
}

// TestDistributionPointSuccessor: a distribution point that, after a good
// CRL, serves one that may not succeed it (older, forged, another CA's,
// unnumbered, older thisUpdate) changes nothing: the revoked client stays
// revoked (not "unavailable", so crl_soft_fail does not let it through),
// the issuer's good client stays admitted, and the refusal is logged and
// counted once however often the refresh fetches it again.
func TestDistributionPointSuccessor(t *testing.T) {
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "inter")
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, inter.Cert, root.Cert} }
	for _, soft := range []bool{false, true} {
		for _, name := range successorCaseNames {
			t.Run(fmt.Sprintf("%s, soft %v", name, soft), func(t *testing.T) {
				dp := revocationtest.NewCRLServer(t, nil)
				alice := inter.Issue(t, testpki.CN("alice"), revocationtest.DistributionPoint(dp.URL))
				bob := inter.Issue(t, testpki.CN("bob"), revocationtest.DistributionPoint(dp.URL))
				good, c := newSuccessorCase(t, name, root, inter, bob.Cert)
				dp.Serve(good)
				r := &Revocation{DistributionPoints: true, SoftFail: soft, Refresh: caddy.Duration(20 * time.Millisecond)}
				logs, metrics := provisionObserved(t, r)
				assertBobRevoked := func(when string) {
					t.Helper()
					if err := r.check(chain(alice)); err != nil {
						t.Fatalf("%s: alice: %v", when, err)
					}
					err := r.check(chain(bob))
					if err == nil || errors.Is(err, errCRLUnavailable) || !strings.Contains(err.Error(), "is revoked") {
						t.Fatalf("%s: bob: %v", when, err)
					}
				}
				assertBobRevoked("the good CRL")
				before := refusedCount(t, metrics, "distribution_point", c.reason)

				dp.Serve(c.crl)
				dp.Refreshed(t, 5*time.Second)
				assertBobRevoked("after " + c.name)
				dp.Refreshed(t, 5*time.Second) // fetched again: not logged or counted again
				if n := refusedCount(t, metrics, "distribution_point", c.reason) - before; n != 1 {
					t.Errorf("refused %v times (reason %s), want 1", n, c.reason)
				}
				refusals := logs.FilterMessage("CRL refused; keeping the last good one").All()
				if len(refusals) != 1 {
					t.Fatalf("%d refusal log lines, want 1", len(refusals))
				}
				if f := refusals[0].ContextMap(); f["reason"] != c.reason || f["source"] != dp.URL || f["origin"] != "distribution_point" {
					t.Errorf("refusal logged with %v", f)
				}

				// a good successor is taken again
				dp.Serve(revocationtest.CRL(t, inter, time.Now().Add(time.Hour), bob.Cert, alice.Cert))
				waitFor(t, "alice revoked by the next good CRL", func() bool { return r.check(chain(alice)) != nil })
			})
		}
	}
}

// TestRevocationFileSuccessorBeforeFirstHandshake: a CRL file replaced,
// before any handshake has named its issuer, by a CRL that may not succeed
// the one loaded (older, forged, another CA's, unnumbered, older
// thisUpdate) does not replace it: the first handshake checks both against
// the issuer of its chain, keeps the good one and refuses the other,
// logged and counted once; crl_soft_fail lets nobody revoked through.
func TestRevocationFileSuccessorBeforeFirstHandshake(t *testing.T) {
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "inter")
	alice, bob := inter.Issue(t, testpki.CN("alice")), inter.Issue(t, testpki.CN("bob"))
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, inter.Cert, root.Cert} }
	for _, name := range successorCaseNames {
		t.Run(name, func(t *testing.T) {
			good, c := newSuccessorCase(t, name, root, inter, bob.Cert)
			dir := t.TempDir()
			file := testpki.WriteFile(t, dir, "inter.crl", revocationtest.PEM(good))
			hard, soft := &Revocation{CRLFiles: []string{file}}, &Revocation{CRLFiles: []string{file}, SoftFail: true}
			logs, metrics := provisionObserved(t, hard)
			provisionObserved(t, soft)
			before := refusedCount(t, metrics, "file", c.reason)

			testpki.WriteFile(t, dir, "inter.crl", revocationtest.PEM(c.crl))
			waitFor(t, "the new version read", func() bool { return reloads(t, metrics, file, "ok") >= 2 })
			for _, r := range []*Revocation{hard, soft} {
				if err := r.check(chain(alice)); err != nil {
					t.Fatalf("soft %v: alice: %v", r.SoftFail, err)
				}
				if err := r.check(chain(bob)); err == nil || errors.Is(err, errCRLUnavailable) {
					t.Fatalf("soft %v: bob: %v", r.SoftFail, err)
				}
			}
			if n := refusedCount(t, metrics, "file", c.reason) - before; n != 1 {
				t.Errorf("refused %v times (reason %s), want 1", n, c.reason)
			}
			if n := logs.FilterMessage("CRL refused; keeping the last good one").Len(); n != 1 {
				t.Errorf("%d refusal log lines, want 1", n)
			}
		})
	}
}

// TestRevocationFileSuccessorAfterHandshake: once a handshake has named
// the issuer, a new version is checked when it is read: an unnumbered CRL
// after a numbered one (which the old check let through) is refused then.
func TestRevocationFileSuccessorAfterHandshake(t *testing.T) {
	root := testpki.NewCA(t, "root")
	alice, bob := root.Issue(t, testpki.CN("alice")), root.Issue(t, testpki.CN("bob"))
	week := time.Now().Add(7 * 24 * time.Hour)
	dir := t.TempDir()
	file := testpki.WriteFile(t, dir, "root.crl", revocationtest.PEM(revocationtest.CRL(t, root, week, bob.Cert)))
	r := &Revocation{CRLFiles: []string{file}}
	logs, metrics := provisionObserved(t, r)
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, root.Cert} }
	if err := r.check(chain(bob)); err == nil {
		t.Fatal("bob accepted")
	}
	before := refusedCount(t, metrics, "file", "number_missing")
	testpki.WriteFile(t, dir, "root.crl", revocationtest.PEM(revocationtest.CRLOf(t, root, nil, time.Now(), week)))
	waitFor(t, "the unnumbered CRL refused", func() bool { return refusedCount(t, metrics, "file", "number_missing") > before })
	if err := r.check(chain(bob)); err == nil || errors.Is(err, errCRLUnavailable) {
		t.Fatalf("bob after an unnumbered CRL: %v", err)
	}
	if err := r.check(chain(alice)); err != nil {
		t.Fatalf("alice: %v", err)
	}
	if l := logs.FilterMessage("CRL refused; keeping the last good one").All(); len(l) != 1 || l[0].ContextMap()["source"] != file {
		t.Fatalf("refusal log lines: %v", l)
	}
}

// TestRevocationFileNewerBeforeFirstHandshake: a good successor written
// before the first handshake is in force at that handshake (the versions
// waiting for their issuer are settled in order), and a version that
// leaves an issuer's CRL out keeps that CRL in force, refused once.
func TestRevocationFileNewerBeforeFirstHandshake(t *testing.T) {
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "inter")
	alice, bob := inter.Issue(t, testpki.CN("alice")), inter.Issue(t, testpki.CN("bob"))
	week := time.Now().Add(7 * 24 * time.Hour)
	dir := t.TempDir()
	file := testpki.WriteFile(t, dir, "crls.pem", revocationtest.PEM(revocationtest.CRL(t, inter, week, bob.Cert), revocationtest.CRL(t, root, week)))
	r := &Revocation{CRLFiles: []string{file}}
	logs, metrics := provisionObserved(t, r)
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, inter.Cert, root.Cert} }

	testpki.WriteFile(t, dir, "crls.pem", revocationtest.PEM(revocationtest.CRL(t, inter, week, bob.Cert, alice.Cert), revocationtest.CRL(t, root, week)))
	waitFor(t, "the second version read", func() bool { return reloads(t, metrics, file, "ok") >= 2 })
	if err := r.check(chain(alice)); err == nil || errors.Is(err, errCRLUnavailable) {
		t.Fatalf("alice, revoked by the newer CRL: %v", err)
	}

	// the root's CRL left out: the root's CRL in force stays
	before := refusedCount(t, metrics, "file", "issuer")
	testpki.WriteFile(t, dir, "crls.pem", revocationtest.PEM(revocationtest.CRL(t, inter, week, bob.Cert, alice.Cert)))
	waitFor(t, "the third version read", func() bool { return reloads(t, metrics, file, "ok") >= 3 })
	if l := r.files[0].Src.Current()[string(root.Cert.RawSubject)]; l == nil || len(l.inForce(root.Cert)) != 1 {
		t.Fatal("the root's CRL left the file and went out of force")
	}
	testpki.WriteFile(t, dir, "crls.pem", revocationtest.PEM(revocationtest.CRL(t, inter, week, alice.Cert)))
	waitFor(t, "the fourth version read", func() bool { return reloads(t, metrics, file, "ok") >= 4 })
	if n := refusedCount(t, metrics, "file", "issuer") - before; n != 1 {
		t.Errorf("the missing root CRL counted %v times over two versions, want 1", n)
	}
	if n := logs.FilterMessage("CRL refused; keeping the last good one").Len(); n != 1 {
		t.Errorf("%d refusal log lines, want 1", n)
	}
}
