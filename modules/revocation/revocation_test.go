package revocation

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

func provisionRevocation(t *testing.T, r *Revocation) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := r.Provision(ctx, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Cleanup)
}

func TestRevocationFiles(t *testing.T) {
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "inter")
	alice := inter.Issue(t, testpki.CN("alice"))
	bob := inter.Issue(t, testpki.CN("bob"))
	dir := t.TempDir()
	week := time.Now().Add(7 * 24 * time.Hour)
	// one file holding the intermediate's CRL (bob revoked) and the root's
	file := testpki.WriteFile(t, dir, "crls.pem", revocationtest.PEM(revocationtest.CRL(t, inter, week, bob.Cert), revocationtest.CRL(t, root, week)))
	r := &Revocation{CRLFiles: []string{file}}
	_, metrics := provisionObserved(t, r)

	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, inter.Cert, root.Cert} }
	if err := r.check(chain(alice)); err != nil {
		t.Fatalf("alice: %v", err)
	}
	err := r.check(chain(bob))
	if err == nil || !strings.Contains(err.Error(), `certificate "CN=bob"`) || !strings.Contains(err.Error(), "is revoked by the CRL from "+file) || errors.Is(err, errCRLUnavailable) {
		t.Fatalf("bob: %v", err)
	}

	// the file changes: the root revokes the intermediate; picked up by
	// the watcher, everyone under it is refused
	testpki.WriteFile(t, dir, "crls.pem", revocationtest.PEM(revocationtest.CRL(t, inter, week), revocationtest.CRL(t, root, week, inter.Cert)))
	waitFor(t, "intermediate revoked after the file changed", func() bool {
		err := r.check(chain(alice))
		return err != nil && strings.Contains(err.Error(), `certificate "CN=inter"`)
	})
	if err := r.check(chain(bob)); err == nil {
		t.Fatal("bob accepted")
	}

	// a broken file is refused (the reload counted as failed) and the
	// last good CRLs stay
	failed := reloads(t, metrics, file, "failed")
	testpki.WriteFile(t, dir, "crls.pem", []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	waitFor(t, "the broken file refused", func() bool { return reloads(t, metrics, file, "failed") > failed })
	if err := r.check(chain(alice)); err == nil || !strings.Contains(err.Error(), `certificate "CN=inter"`) {
		t.Fatalf("a broken CRL file dropped the last good CRLs: alice: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRevocationUnusableCRL(t *testing.T) {
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "inter")
	impostor := root.NewIntermediate(t, "inter") // same name, other key
	alice := inter.Issue(t, testpki.CN("alice"))
	chain := []*x509.Certificate{alice.Cert, inter.Cert, root.Cert}
	dir := t.TempDir()
	for name, der := range map[string][]byte{
		"expired":   revocationtest.CRL(t, inter, time.Now().Add(-time.Second)),
		"impostor":  revocationtest.CRL(t, impostor, time.Now().Add(time.Hour), alice.Cert),
		"malformed": nil,
	} {
		t.Run(name, func(t *testing.T) {
			if der == nil {
				r := &Revocation{CRLFiles: []string{testpki.WriteFile(t, dir, name, []byte("not a crl"))}}
				ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
				defer cancel()
				err := r.Provision(ctx, zap.NewNop())
				if err == nil || !strings.Contains(err.Error(), "crl "+filepath.Join(dir, name)) {
					t.Fatalf("provision: %v", err)
				}
				return
			}
			file := testpki.WriteFile(t, dir, name+".der", der)
			for _, soft := range []bool{false, true} {
				r := &Revocation{CRLFiles: []string{file}, SoftFail: soft}
				provisionRevocation(t, r)
				err := r.check(chain)
				if !errors.Is(err, errCRLUnavailable) {
					t.Fatalf("soft %v: %v", soft, err)
				}
			}
		})
	}
}

func TestRevocationDistributionPoints(t *testing.T) {
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "inter")
	var (
		mu   sync.Mutex
		body []byte
		hits atomic.Int64
		fail atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	set := func(b []byte) { mu.Lock(); body = b; mu.Unlock() }
	url := srv.URL + "/inter.crl"
	alice := inter.Issue(t, testpki.CN("alice"), revocationtest.DistributionPoint(url))
	bob := inter.Issue(t, testpki.CN("bob"), revocationtest.DistributionPoint(url))
	noDP := inter.Issue(t, testpki.CN("carol"))
	ldapOnly := inter.Issue(t, testpki.CN("dave"), revocationtest.DistributionPoint("ldap://ldap.example.org/cn=inter"))
	set(revocationtest.CRL(t, inter, time.Now().Add(time.Hour), bob.Cert))
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, inter.Cert, root.Cert} }

	r := &Revocation{DistributionPoints: true, Refresh: caddy.Duration(50 * time.Millisecond)}
	provisionRevocation(t, r)
	for i := 0; i < 5; i++ {
		if err := r.check(chain(alice)); err != nil {
			t.Fatalf("alice: %v", err)
		}
	}
	if err := r.check(chain(bob)); err == nil || !strings.Contains(err.Error(), "revoked by the CRL from "+url) {
		t.Fatalf("bob: %v", err)
	}
	if err := r.check(chain(noDP)); err != nil {
		t.Fatalf("no distribution point: %v", err)
	}
	if err := r.check(chain(ldapOnly)); err != nil {
		t.Fatalf("ldap distribution point only: %v", err)
	}

	// refreshed in the background: alice revoked later is refused
	set(revocationtest.CRL(t, inter, time.Now().Add(time.Hour), bob.Cert, alice.Cert))
	waitFor(t, "refreshed CRL revoking alice", func() bool { return r.check(chain(alice)) != nil })

	// a failing refresh keeps the last good CRL
	fail.Store(true)
	before := hits.Load()
	waitFor(t, "a failed refresh attempt", func() bool { return hits.Load() > before })
	if err := r.check(chain(bob)); err == nil || errors.Is(err, errCRLUnavailable) {
		t.Fatalf("bob after a failed refresh: %v", err)
	}

	// a distribution point that never answered: unavailable (fail closed)
	r = &Revocation{DistributionPoints: true} // default refresh: retries after 30s
	provisionRevocation(t, r)
	down := inter.Issue(t, testpki.CN("erin"), revocationtest.DistributionPoint(srv.URL+"/down.crl"))
	if err := r.check(chain(down)); !errors.Is(err, errCRLUnavailable) || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("unreachable distribution point: %v", err)
	}
	// and it is not fetched again on every handshake
	before = hits.Load()
	for i := 0; i < 10; i++ {
		_ = r.check(chain(down))
	}
	if n := hits.Load() - before; n != 0 {
		t.Fatalf("%d downloads for 10 handshakes of an unreachable distribution point", n)
	}
}

func TestRevocationOnlyCRLFetchedOnce(t *testing.T) {
	root := testpki.NewCA(t, "root")
	var hits atomic.Int64
	crl := revocationtest.CRL(t, root, time.Now().Add(time.Hour))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write(crl)
	}))
	defer srv.Close()
	leaf := root.Issue(t, revocationtest.DistributionPoint(srv.URL))
	r := &Revocation{DistributionPoints: true}
	provisionRevocation(t, r)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.check([]*x509.Certificate{leaf.Cert, root.Cert}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d downloads for 20 concurrent handshakes, want 1", n)
	}
}

// TestRevocationFileSteps: a CRL file is followed within 2 seconds; once
// a handshake has named the issuer, a new version that would step back (a
// lower CRL number, a CRL not signed by the issuer) is refused as it is
// read, counted and logged, and one that does not parse is refused by the
// reload; either way the last good CRL stays in force.
func TestRevocationFileSteps(t *testing.T) {
	root := testpki.NewCA(t, "root")
	impostor := testpki.NewCA(t, "root") // same name, other key
	alice := root.Issue(t, testpki.CN("alice"))
	bob := root.Issue(t, testpki.CN("bob"))
	dir := t.TempDir()
	week := time.Now().Add(7 * 24 * time.Hour)
	older := revocationtest.CRL(t, root, week) // a lower number than what follows
	file := testpki.WriteFile(t, dir, "root.crl", revocationtest.PEM(revocationtest.CRL(t, root, week, bob.Cert)))
	r := &Revocation{CRLFiles: []string{file}}
	_, metrics := provisionObserved(t, r)
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, root.Cert} }
	if err := r.check(chain(alice)); err != nil {
		t.Fatalf("alice: %v", err)
	}
	if err := r.check(chain(bob)); err == nil {
		t.Fatal("bob accepted")
	}

	start := time.Now()
	testpki.WriteFile(t, dir, "root.crl", revocationtest.PEM(revocationtest.CRL(t, root, week, alice.Cert, bob.Cert)))
	waitFor(t, "alice revoked after the CRL file changed", func() bool { return r.check(chain(alice)) != nil })
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("the new CRL took %s to be in force", d)
	}

	for _, step := range []struct {
		name, reason string // reason: of the successor rule; "": the reload fails
		data         []byte
	}{
		{"an older CRL (lower number)", "number", revocationtest.PEM(older)},
		{"a CRL by an impostor", "signature", revocationtest.PEM(revocationtest.CRL(t, impostor, week))},
		{"a truncated CRL", "", revocationtest.PEM(revocationtest.CRL(t, root, week))[:200]},
	} {
		refused := func() float64 {
			if step.reason == "" {
				return reloads(t, metrics, file, "failed")
			}
			return refusedCount(t, metrics, "file", step.reason)
		}
		before := refused()
		testpki.WriteFile(t, dir, "root.crl", step.data)
		waitFor(t, step.name+" refused", func() bool { return refused() > before })
		if err := r.check(chain(alice)); err == nil || errors.Is(err, errCRLUnavailable) {
			t.Fatalf("%s: alice: %v", step.name, err)
		}
	}
}

// TestRevocationExpiredCRL: past its nextUpdate a CRL refuses what it
// covers (the default) or, with expired "use", still refuses what it lists
// and lets the rest through.
func TestRevocationExpiredCRL(t *testing.T) {
	root := testpki.NewCA(t, "root")
	alice, bob := root.Issue(t, testpki.CN("alice")), root.Issue(t, testpki.CN("bob"))
	file := testpki.WriteFile(t, t.TempDir(), "root.crl", revocationtest.PEM(revocationtest.CRL(t, root, time.Now().Add(-30*time.Second), bob.Cert)))
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, root.Cert} }

	refuse := &Revocation{CRLFiles: []string{file}}
	provisionRevocation(t, refuse)
	if err := refuse.check(chain(alice)); !errors.Is(err, errCRLUnavailable) || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("default: alice under an expired CRL: %v", err)
	}
	use := &Revocation{CRLFiles: []string{file}, Expired: "use"}
	provisionRevocation(t, use)
	if err := use.check(chain(alice)); err != nil {
		t.Fatalf("expired use: alice: %v", err)
	}
	if err := use.check(chain(bob)); err == nil || errors.Is(err, errCRLUnavailable) {
		t.Fatalf("expired use: bob: %v", err)
	}
	if na := refuse.files[0].Src.CurrentLoaded().NotAfter; na.After(time.Now()) || na.IsZero() {
		t.Fatalf("the file's not-after is %v, want its past nextUpdate", na)
	}
}

// check is the CRL check of Verify, without metrics or trace.
func (r *Revocation) check(chain []*x509.Certificate) error { return r.checkNoted(chain, nil) }
