package verify

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

// TestRecheckFollowsItsMaterial: a verdict holds while its material is
// unchanged (no check runs), is checked again once when the material
// changes, and a failed re-check is final.
func TestRecheckFollowsItsMaterial(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.ClientOnly())
	var version atomic.Int64
	var checks atomic.Int64
	var fail atomic.Bool
	v := &Verified{Chain: []*x509.Certificate{leaf.Cert, ca.Cert}}
	v.DependOn(func() any { return version.Load() }, func(chain []*x509.Certificate) error {
		checks.Add(1)
		if fail.Load() {
			return refuse(ReasonRevoked, errors.New("revoked"))
		}
		return nil
	})
	for range 3 {
		if err := v.Recheck(); err != nil {
			t.Fatal(err)
		}
	}
	if checks.Load() != 0 {
		t.Fatalf("%d checks while nothing changed", checks.Load())
	}
	version.Add(1)
	for range 3 {
		if err := v.Recheck(); err != nil {
			t.Fatal(err)
		}
	}
	if checks.Load() != 1 {
		t.Fatalf("%d checks after one change, want 1", checks.Load())
	}
	fail.Store(true)
	version.Add(1)
	if err := v.Recheck(); ReasonOf(err) != ReasonRevoked {
		t.Fatalf("got %v, want the revocation", err)
	}
	fail.Store(false)
	version.Add(1)
	if err := v.Recheck(); ReasonOf(err) != ReasonRevoked {
		t.Fatalf("a failed re-check is not final: %v", err)
	}
}

// BenchmarkRecheckUnchanged is the per-request cost of a re-check while
// the material is unchanged: one version compare per dependency.
func BenchmarkRecheckUnchanged(b *testing.B) {
	ca := testpki.NewCA(b, "root")
	leaf := ca.Issue(b, testpki.ClientOnly())
	v := &Verified{Chain: []*x509.Certificate{leaf.Cert, ca.Cert}}
	anchors := NewAnchors([]*x509.Certificate{ca.Cert})
	var current atomic.Pointer[Anchors]
	current.Store(anchors)
	v.DependOn(func() any { return current.Load() }, func([]*x509.Certificate) error { return nil })
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Recheck(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrackConnKnown is the per-request cost of the connection-state
// hook on HTTP/1.1 (every request of a kept connection turns it active).
func BenchmarkTrackConnKnown(b *testing.B) {
	c := tls.Client(nil, &tls.Config{})
	TrackConn(c)
	defer UntrackConn(c)
	b.ReportAllocs()
	for b.Loop() {
		TrackConn(c)
	}
}
