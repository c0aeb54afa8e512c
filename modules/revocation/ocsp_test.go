package revocation

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/crypto/ocsp"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// clock is a test clock: the real time shifted by an offset, shared by the
// checker and the responder.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time            { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration)   { c.offset.Add(int64(d)) }
func (c *clock) nowFunc() func() time.Time { return c.now }

func aia(url string) testpki.Option { return testpki.OCSPServer(url) }

func provisionOCSP(t *testing.T, o *OCSP, c *clock) *OCSP {
	t.Helper()
	if c != nil {
		o.now = c.nowFunc()
	}
	if err := o.provision(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.client.CloseIdleConnections)
	return o
}

func TestOCSPStatuses(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, c.now)
	good := ca.Issue(t, testpki.CN("good"), aia(r.URL))
	revoked := ca.Issue(t, testpki.CN("revoked"), aia(r.URL))
	unknown := ca.Issue(t, testpki.CN("unknown"), aia(r.URL))
	r.Set(good.Cert, ocsp.Good)
	r.Set(revoked.Cert, ocsp.Revoked)
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, ca.Cert} }

	for _, soft := range []bool{false, true} {
		o := provisionOCSP(t, &OCSP{SoftFail: soft}, c)
		if err := o.check(chain(good)); err != nil {
			t.Fatalf("good: %v", err)
		}
		err := o.check(chain(revoked))
		if err == nil || errors.Is(err, errOCSPUnavailable) || !strings.Contains(err.Error(), `certificate "CN=revoked"`) ||
			!strings.Contains(err.Error(), "is revoked by the OCSP responder "+r.URL) || !strings.Contains(err.Error(), "reason keyCompromise") {
			t.Fatalf("revoked: %v", err)
		}
		// unknown is refused even with soft fail, as nginx does
		err = o.check(chain(unknown))
		if err == nil || errors.Is(err, errOCSPUnavailable) || !strings.Contains(err.Error(), "answered status unknown") {
			t.Fatalf("unknown: %v", err)
		}
		rev := &Revocation{OCSP: o}
		if refuse, _, soft := rev.VerifyTraced(chain(unknown), nil); refuse == nil || len(soft) != 0 {
			t.Fatalf("unknown with soft fail %v: refuse %v, soft %v", o.SoftFail, refuse, soft)
		}
	}
}

func TestOCSPUnusableResponses(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, c.now)
	leaf := ca.Issue(t, testpki.CN("alice"), aia(r.URL))
	r.Set(leaf.Cert, ocsp.Good)
	chain := []*x509.Certificate{leaf.Cert, ca.Cert}
	for mode, want := range map[string]string{
		"503":         "HTTP 503",
		"trylater":    `the responder answered "try later"`,
		"garbage":     "response from " + r.URL,
		"expired":     "response expired",
		"future":      "response not yet valid",
		"wrongserial": "no response matching the supplied certificate",
		"badsig":      "signature does not verify against the issuer",
		"otherissuer": "about a certificate of another issuer",
	} {
		t.Run(mode, func(t *testing.T) {
			r.SetMode(mode)
			defer r.SetMode("")
			for _, soft := range []bool{false, true} {
				o := provisionOCSP(t, &OCSP{SoftFail: soft}, c)
				err := o.check(chain)
				if !errors.Is(err, errOCSPUnavailable) || !strings.Contains(err.Error(), want) {
					t.Fatalf("soft %v: %v, want %q", soft, err, want)
				}
				refuse, _, softs := (&Revocation{OCSP: o}).VerifyTraced(chain, nil)
				if soft != (refuse == nil) || soft != (len(softs) == 1) {
					t.Fatalf("soft %v: refuse %v, soft failures %v", soft, refuse, softs)
				}
			}
		})
	}
}

// TestOCSPMaxAge: a good answer whose thisUpdate is old (a replay: the
// responder's clock here runs two hours behind) is no usable answer when
// it has no nextUpdate (an hour by default), or whatever its nextUpdate
// when ocsp_max_age is set and exceeded; hard fail refuses, soft fail lets
// through with the reason. A revoked answer counts whatever its age.
func TestOCSPMaxAge(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	replayed := revocationtest.NewResponder(t, ca, func() time.Time { return c.now().Add(-2 * time.Hour) })
	alice := ca.Issue(t, testpki.CN("alice"), aia(replayed.URL))
	bob := ca.Issue(t, testpki.CN("bob"), aia(replayed.URL))
	replayed.Set(alice.Cert, ocsp.Good)
	replayed.Set(bob.Cert, ocsp.Revoked)
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, ca.Cert} }

	replayed.SetNextUpdate(-1)
	for _, soft := range []bool{false, true} {
		o := provisionOCSP(t, &OCSP{SoftFail: soft}, c)
		err := o.check(chain(alice))
		if !errors.Is(err, errOCSPUnavailable) || !strings.Contains(err.Error(), "good answer too old") || !strings.Contains(err.Error(), "no nextUpdate") {
			t.Fatalf("soft %v: a two-hour-old good answer without nextUpdate: %v", soft, err)
		}
		refuse, _, softs := (&Revocation{OCSP: o}).VerifyTraced(chain(alice), nil)
		if soft != (refuse == nil) || soft != (len(softs) == 1) {
			t.Fatalf("soft %v: refuse %v, soft failures %v", soft, refuse, softs)
		}
		if err := o.check(chain(bob)); err == nil || errors.Is(err, errOCSPUnavailable) || !strings.Contains(err.Error(), "is revoked") {
			t.Fatalf("soft %v: an old revoked answer: %v", soft, err)
		}
	}
	// ocsp_max_age raised above the answer's age: good
	if err := provisionOCSP(t, &OCSP{MaxAge: caddy.Duration(3 * time.Hour)}, c).check(chain(alice)); err != nil {
		t.Fatalf("max_age 3h: %v", err)
	}

	// with a nextUpdate (pre-signed answers): nextUpdate bounds it, unless
	// ocsp_max_age is set
	replayed.SetNextUpdate(4 * time.Hour)
	if err := provisionOCSP(t, &OCSP{}, c).check(chain(alice)); err != nil {
		t.Fatalf("a two-hour-old answer valid until its nextUpdate: %v", err)
	}
	if err := provisionOCSP(t, &OCSP{MaxAge: caddy.Duration(time.Hour)}, c).check(chain(alice)); !errors.Is(err, errOCSPUnavailable) || !strings.Contains(err.Error(), "good answer too old") {
		t.Fatalf("max_age 1h, a two-hour-old answer with a nextUpdate: %v", err)
	}

	// a fresh answer without nextUpdate is cached until thisUpdate +
	// max_age at most
	fresh := revocationtest.NewResponder(t, ca, func() time.Time { return c.now().Add(-40 * time.Minute) })
	fresh.SetNextUpdate(-1)
	carol := ca.Issue(t, testpki.CN("carol"), aia(fresh.URL))
	fresh.Set(carol.Cert, ocsp.Good)
	o := provisionOCSP(t, &OCSP{}, c)
	if err := o.check(chain(carol)); err != nil {
		t.Fatalf("a 41-minute-old answer: %v", err)
	}
	c.advance(15 * time.Minute) // 56 minutes old: cached
	before := fresh.Hits.Load()
	if err := o.check(chain(carol)); err != nil || fresh.Hits.Load() != before {
		t.Fatalf("within thisUpdate + 1h: %v, %d queries, want the cached answer", err, fresh.Hits.Load()-before)
	}
	c.advance(5 * time.Minute)
	if err := o.check(chain(carol)); err != nil || fresh.Hits.Load() != before+1 {
		t.Fatalf("past thisUpdate + 1h: %v, %d queries, want the answer asked again", err, fresh.Hits.Load()-before)
	}
}

func TestOCSPDelegatedResponder(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	other := testpki.NewCA(t, "other")
	r := revocationtest.NewResponder(t, ca, c.now)
	leaf := ca.Issue(t, testpki.CN("alice"), aia(r.URL))
	r.Set(leaf.Cert, ocsp.Good)
	chain := []*x509.Certificate{leaf.Cert, ca.Cert}
	for name, tc := range map[string]struct {
		signer *testpki.Leaf
		want   string
	}{
		"authorized":   {ca.Issue(t, testpki.CN("ocsp"), testpki.EKU(x509.ExtKeyUsageOCSPSigning)), ""},
		"no EKU":       {ca.Issue(t, testpki.CN("ocsp"), testpki.ClientOnly()), "lacks the OCSPSigning extended key usage"},
		"other issuer": {other.Issue(t, testpki.CN("ocsp"), testpki.EKU(x509.ExtKeyUsageOCSPSigning)), "is not issued by the certificate's issuer"},
		"expired":      {ca.Issue(t, testpki.CN("ocsp"), testpki.EKU(x509.ExtKeyUsageOCSPSigning), testpki.Expired()), "is not valid now"},
	} {
		t.Run(name, func(t *testing.T) {
			r.SetSigner(tc.signer)
			o := provisionOCSP(t, &OCSP{}, c)
			err := o.check(chain)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, errOCSPUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}

func TestOCSPResponderDown(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.CN("alice"), aia(revocationtest.ClosedURL(t)))
	noAIA := ca.Issue(t, testpki.CN("bob"), testpki.OCSPServer("ldap://ldap.example.org/ocsp"))
	for _, soft := range []bool{false, true} {
		o := provisionOCSP(t, &OCSP{SoftFail: soft}, nil)
		rev := &Revocation{OCSP: o}
		for _, l := range []*testpki.Leaf{leaf, noAIA} {
			chain := []*x509.Certificate{l.Cert, ca.Cert}
			refuse, msg, softs := rev.VerifyTraced(chain, nil)
			if soft {
				if refuse != nil || len(softs) != 1 || !errors.Is(softs[0].Err, errOCSPUnavailable) || !strings.Contains(softs[0].Msg, "ocsp_soft_fail") {
					t.Fatalf("soft fail, %s: refuse %v, soft %v", l.Cert.Subject, refuse, softs)
				}
				continue
			}
			if !errors.Is(refuse, errOCSPUnavailable) || !strings.Contains(msg, "OCSP") {
				t.Fatalf("fail closed, %s: %v (%s)", l.Cert.Subject, refuse, msg)
			}
			if l == noAIA && !strings.Contains(refuse.Error(), "no OCSP responder URL in the certificate") {
				t.Fatalf("no responder URL: %v", refuse)
			}
		}
	}
}

func TestOCSPTimeout(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, nil)
	r.SetMode("hang")
	leaf := ca.Issue(t, aia(r.URL))
	o := provisionOCSP(t, &OCSP{FetchTimeout: caddy.Duration(100 * time.Millisecond)}, nil)
	err := o.check([]*x509.Certificate{leaf.Cert, ca.Cert})
	if !errors.Is(err, errOCSPUnavailable) || !strings.Contains(err.Error(), "deadline exceeded") && !strings.Contains(err.Error(), "Timeout") {
		t.Fatalf("hanging responder: %v", err)
	}
}

func TestOCSPCache(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, c.now)
	leaf := ca.Issue(t, aia(r.URL))
	revoked := ca.Issue(t, aia(r.URL))
	unknown := ca.Issue(t, aia(r.URL))
	r.Set(leaf.Cert, ocsp.Good)
	r.Set(revoked.Cert, ocsp.Revoked)
	chain := func(l *testpki.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert, ca.Cert} }
	o := provisionOCSP(t, &OCSP{}, c)

	// good and revoked: asked once, then served from the cache
	for _, l := range []*testpki.Leaf{leaf, revoked} {
		before := r.Hits.Load()
		for i := 0; i < 5; i++ {
			if err := o.check(chain(l)); (err != nil) != (l == revoked) {
				t.Fatal(err)
			}
		}
		if n := r.Hits.Load() - before; n != 1 {
			t.Fatalf("%d queries for 5 checks", n)
		}
	}
	// until nextUpdate (1h): the responder now says revoked, the cache
	// still says good; past nextUpdate it asks again
	r.Set(leaf.Cert, ocsp.Revoked)
	c.advance(59 * time.Minute)
	if err := o.check(chain(leaf)); err != nil {
		t.Fatalf("before nextUpdate: %v", err)
	}
	c.advance(2 * time.Minute)
	if err := o.check(chain(leaf)); err == nil || !strings.Contains(err.Error(), "is revoked") {
		t.Fatalf("after nextUpdate: %v", err)
	}

	// unknown and failures: remembered for retryAfter only
	before := r.Hits.Load()
	for i := 0; i < 3; i++ {
		_ = o.check(chain(unknown))
	}
	if n := r.Hits.Load() - before; n != 1 {
		t.Fatalf("%d queries for 3 checks of an unknown certificate", n)
	}
	c.advance(ocspRetryAfter + time.Second)
	r.Set(unknown.Cert, ocsp.Good) // the responder learnt of it
	if err := o.check(chain(unknown)); err != nil {
		t.Fatalf("unknown, later good: %v", err)
	}
	r.SetMode("503")
	down := ca.Issue(t, aia(r.URL))
	before = r.Hits.Load()
	for i := 0; i < 3; i++ {
		if err := o.check(chain(down)); !errors.Is(err, errOCSPUnavailable) {
			t.Fatal(err)
		}
	}
	if n := r.Hits.Load() - before; n != 1 {
		t.Fatalf("%d queries for 3 checks with the responder down", n)
	}
	r.SetMode("")

	// a response without nextUpdate is cached for an hour (as nginx)
	r.SetNextUpdate(-1)
	noNext := ca.Issue(t, aia(r.URL))
	r.Set(noNext.Cert, ocsp.Good)
	before = r.Hits.Load()
	_ = o.check(chain(noNext))
	c.advance(50 * time.Minute)
	_ = o.check(chain(noNext))
	if n := r.Hits.Load() - before; n != 1 {
		t.Fatalf("%d queries within the hour", n)
	}
	c.advance(11 * time.Minute)
	_ = o.check(chain(noNext))
	if n := r.Hits.Load() - before; n != 2 {
		t.Fatalf("%d queries after the hour, want 2", n)
	}

	// cache off: every check asks
	off := provisionOCSP(t, &OCSP{CacheSize: -1}, c)
	before = r.Hits.Load()
	for i := 0; i < 3; i++ {
		_ = off.check(chain(noNext))
	}
	if n := r.Hits.Load() - before; n != 3 {
		t.Fatalf("cache off: %d queries for 3 checks", n)
	}
}

func TestOCSPCacheBounded(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, c.now)
	o := provisionOCSP(t, &OCSP{CacheSize: 10}, c)
	for i := 0; i < 50; i++ {
		l := ca.Issue(t, aia(r.URL))
		r.Set(l.Cert, ocsp.Good)
		if err := o.check([]*x509.Certificate{l.Cert, ca.Cert}); err != nil {
			t.Fatal(err)
		}
		o.mu.Lock()
		n := len(o.cache)
		o.mu.Unlock()
		if n > 10 {
			t.Fatalf("%d cached answers, limit 10", n)
		}
	}
}

func TestOCSPCoalescing(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, c.now)
	leaf := ca.Issue(t, aia(r.URL))
	r.Set(leaf.Cert, ocsp.Good)
	release := make(chan struct{})
	r.Block(release)
	// no cache: only the coalescing keeps it to one query
	o := provisionOCSP(t, &OCSP{CacheSize: -1}, c)
	const n = 20
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errs <- o.check([]*x509.Certificate{leaf.Cert, ca.Cert}) }()
	}
	waitFor(t, "19 handshakes joining the query in flight", func() bool { return o.joined.Load() == n-1 })
	close(release)
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if h := r.Hits.Load(); h != 1 {
		t.Fatalf("%d queries for %d concurrent handshakes, want 1", h, n)
	}
}

func TestOCSPChain(t *testing.T) {
	c := new(clock)
	root := testpki.NewCA(t, "root")
	rootResp := revocationtest.NewResponder(t, root, c.now)
	inter := root.NewIntermediate(t, "inter", aia(rootResp.URL))
	interResp := revocationtest.NewResponder(t, inter, c.now)
	leaf := inter.Issue(t, testpki.CN("alice"), aia(interResp.URL))
	interResp.Set(leaf.Cert, ocsp.Good)
	rootResp.Set(inter.Cert, ocsp.Revoked)
	chain := []*x509.Certificate{leaf.Cert, inter.Cert, root.Cert}

	err := provisionOCSP(t, &OCSP{}, c).check(chain)
	if err == nil || !strings.Contains(err.Error(), `certificate "CN=inter"`) || !strings.Contains(err.Error(), "is revoked by the OCSP responder "+rootResp.URL) {
		t.Fatalf("whole chain: %v", err)
	}
	before := rootResp.Hits.Load()
	if err := provisionOCSP(t, &OCSP{LeafOnly: true}, c).check(chain); err != nil {
		t.Fatalf("leaf only: %v", err)
	}
	if rootResp.Hits.Load() != before {
		t.Fatal("leaf only asked about the intermediate")
	}

	// ocsp_responder overrides the certificate's URL; a certificate with
	// no URL can then be checked
	bare := inter.Issue(t, testpki.CN("bob"))
	interResp.Set(bare.Cert, ocsp.Revoked)
	err = provisionOCSP(t, &OCSP{LeafOnly: true, Responder: interResp.URL}, c).check([]*x509.Certificate{bare.Cert, inter.Cert, root.Cert})
	if err == nil || !strings.Contains(err.Error(), "is revoked by the OCSP responder "+interResp.URL) {
		t.Fatalf("override: %v", err)
	}
}

func TestOCSPGetAndPost(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, c.now)
	short := ca.Issue(t, aia(r.URL))
	long := ca.Issue(t, aia(r.URL+"/"+strings.Repeat("x", 200)))
	r.Set(short.Cert, ocsp.Good)
	r.Set(long.Cert, ocsp.Good)
	o := provisionOCSP(t, &OCSP{}, c)
	if err := o.check([]*x509.Certificate{short.Cert, ca.Cert}); err != nil {
		t.Fatal(err)
	}
	if err := o.check([]*x509.Certificate{long.Cert, ca.Cert}); err != nil {
		t.Fatal(err)
	}
	if m := r.Methods(); strings.Join(m, ",") != "GET,POST" {
		t.Fatalf("methods %v, want GET for the short URL and POST for the long one", m)
	}
}

func TestOCSPWithCRL(t *testing.T) {
	c := new(clock)
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, c.now)
	// the CRL distribution point is down (crl_soft_fail), OCSP decides
	alice := ca.Issue(t, testpki.CN("alice"), aia(r.URL), revocationtest.DistributionPoint(revocationtest.ClosedURL(t)))
	bob := ca.Issue(t, testpki.CN("bob"), aia(r.URL), revocationtest.DistributionPoint(revocationtest.ClosedURL(t)))
	r.Set(alice.Cert, ocsp.Good)
	r.Set(bob.Cert, ocsp.Revoked)
	rev := &Revocation{DistributionPoints: true, SoftFail: true, OCSP: &OCSP{}}
	rev.OCSP.now = c.nowFunc()
	provisionRevocation(t, rev)
	refuse, _, soft := rev.VerifyTraced([]*x509.Certificate{alice.Cert, ca.Cert}, nil)
	if refuse != nil || len(soft) != 1 || !errors.Is(soft[0].Err, errCRLUnavailable) {
		t.Fatalf("alice: refuse %v, soft %v", refuse, soft)
	}
	refuse, msg, _ := rev.VerifyTraced([]*x509.Certificate{bob.Cert, ca.Cert}, nil)
	if refuse == nil || !strings.Contains(refuse.Error(), "is revoked by the OCSP responder") || !strings.Contains(msg, "OCSP") {
		t.Fatalf("bob: %v (%s)", refuse, msg)
	}
}

func TestOCSPProvisionErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		o    *OCSP
		want string
	}{
		"bad url":       {&OCSP{Responder: "ocsp.example.org"}, `ocsp: responder: bad URL "ocsp.example.org": want an http:// or https:// URL`},
		"no host":       {&OCSP{Responder: "http:///ocsp"}, "no host"},
		"neg timeout":   {&OCSP{FetchTimeout: caddy.Duration(-time.Second)}, "ocsp: fetch_timeout -1s: must be positive"},
		"bad cache":     {&OCSP{CacheSize: -2}, "ocsp: cache_size -2"},
		"neg max age":   {&OCSP{MaxAge: caddy.Duration(-time.Hour)}, "ocsp: max_age -1h0m0s: must be positive"},
		"parse failure": {&OCSP{Responder: "http://[::1"}, "bad URL"},
	} {
		t.Run(name, func(t *testing.T) {
			r := &Revocation{OCSP: tc.o}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := r.Provision(ctx, zap.NewNop())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
			r.Cleanup()
		})
	}
	// OCSP alone is a revocation source; nothing at all is not
	r := &Revocation{}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := r.Provision(ctx, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "no revocation source") {
		t.Fatal(err)
	}
	r = &Revocation{OCSP: &OCSP{}}
	if err := r.Provision(ctx, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	r.Cleanup()
}

// FuzzParseOCSP feeds arbitrary bytes to the response parser, seeded with
// real responses (good, revoked, unknown, delegated; with and without
// nextUpdate, fresh and old) and broken ones. An answer it takes is about
// the certificate, and a good one is fresh.
func FuzzParseOCSP(f *testing.F) {
	ca := testpki.NewCA(f, "root")
	leaf := ca.Issue(f)
	delegate := ca.Issue(f, testpki.EKU(x509.ExtKeyUsageOCSPSigning))
	now := time.Now()
	for _, status := range []int{ocsp.Good, ocsp.Revoked, ocsp.Unknown} {
		for _, times := range [][2]time.Time{{now, now.Add(time.Hour)}, {now, time.Time{}}, {now.Add(-48 * time.Hour), time.Time{}}} {
			tmpl := ocsp.Response{Status: status, SerialNumber: leaf.Cert.SerialNumber, ThisUpdate: times[0], NextUpdate: times[1], RevokedAt: now}
			der, err := ocsp.CreateResponse(ca.Cert, ca.Cert, tmpl, ca.Key)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(der)
			tmpl.Certificate = delegate.Cert
			if der, err = ocsp.CreateResponse(ca.Cert, delegate.Cert, tmpl, delegate.Key); err != nil {
				f.Fatal(err)
			}
			f.Add(der)
		}
	}
	f.Add(ocsp.TryLaterErrorResponse)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80})
	f.Fuzz(func(t *testing.T, der []byte) {
		resp, err := parseOCSP(der, leaf.Cert, ca.Cert, now, 0)
		if err != nil {
			return
		}
		if resp == nil || resp.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
			t.Fatalf("accepted a response about another certificate: %+v", resp)
		}
		if resp.Status == ocsp.Good && resp.NextUpdate.IsZero() && now.Sub(resp.ThisUpdate) > ocspDefaultMaxAge+ocspClockSkew {
			t.Fatalf("accepted a good answer without nextUpdate from %s", resp.ThisUpdate)
		}
	})
}

// check is the OCSP check of Verify, without metrics or trace.
func (o *OCSP) check(chain []*x509.Certificate) error { return o.checkNoted(chain, nil) }
