package verify

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
)

// TestTraceBelongsToItsBuffer: a trace is found for the buffer it was
// attached to only (never a copy of the same bytes), and not after detach.
func TestTraceBelongsToItsBuffer(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.ClientOnly())
	buf := append([]byte(nil), leaf.Cert.Raw...)
	if TraceFor(buf) != nil {
		t.Fatal("a trace without attach")
	}
	tr := new(Trace)
	detach := AttachTrace(buf, tr)
	if TraceFor(buf) != tr || TraceFor(buf[:len(buf):len(buf)]) != tr {
		t.Fatal("the attached buffer has no trace")
	}
	if TraceFor(append([]byte(nil), buf...)) != nil {
		t.Fatal("a copy of the bytes has the trace")
	}
	detach()
	detach()
	if TraceFor(buf) != nil || tracesActive.Load() != 0 {
		t.Fatal("the trace outlives detach")
	}
}

// TestChainStepSaysWhy: the step names what is wrong, per reason class.
func TestChainStepSaysWhy(t *testing.T) {
	root := testpki.NewCA(t, "Root")
	inter := root.NewIntermediate(t, "Issuing")
	other := testpki.NewCA(t, "Other Root")
	otherInter := other.NewIntermediate(t, "Other Issuing")
	anchors := NewAnchors([]*x509.Certificate{root.Cert})
	now := time.Now()
	for _, tc := range []struct {
		name   string
		leaf   *testpki.Leaf
		inters []*x509.Certificate
		reason string
		detail string
	}{
		{"admitted", inter.Issue(t, testpki.ClientOnly()), []*x509.Certificate{inter.Cert}, "", `chain of 3 built to the anchor "CN=Root"`},
		{"intermediate not sent", inter.Issue(t, testpki.ClientOnly()), nil, ReasonUnknownAuthority, `intermediate not sent: the leaf's issuer "CN=Issuing"`},
		{"issuer unknown", otherInter.Issue(t, testpki.ClientOnly()), []*x509.Certificate{otherInter.Cert}, ReasonUnknownAuthority, `issuer unknown: the last certificate the client sent, "CN=Other Issuing"`},
		{"expired", inter.Issue(t, testpki.CN("old"), testpki.ClientOnly(), testpki.Expired()), []*x509.Certificate{inter.Cert}, ReasonExpired, `the leaf "CN=old"`},
		{"server only", inter.Issue(t, testpki.CN("srv"), testpki.ServerOnly()), []*x509.Certificate{inter.Cert}, ReasonBadUsage, "[serverAuth]"},
	} {
		chain, td, err := anchors.Verify(tc.leaf.Cert, tc.inters, x509.ExtKeyUsageClientAuth, now)
		s := ChainStep("live_trust", tc.leaf.Cert, tc.inters, anchors.Certificates(), nil, chain, td, err, now)
		if s.Reason != tc.reason || !strings.Contains(s.Detail, tc.detail) {
			t.Errorf("%s: %s %s", tc.name, s.Reason, s.Detail)
		}
		if tc.reason == ReasonUnknownAuthority && (len(s.Anchors) != 1 || s.Anchors[0].Subject != "CN=Root") {
			t.Errorf("%s: anchors %+v", tc.name, s.Anchors)
		}
	}
}
