package peer

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"golang.org/x/crypto/ocsp"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// The verifier's side of revocation: its Caddyfile options, and real
// handshakes refused (and logged with the identity) when a CRL or an OCSP
// responder says the client certificate is revoked. The checks themselves
// are tested in modules/revocation.

func TestVerifierRevocationHandshake(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	alice := ca.Issue(t, testpki.URI("spiffe://example.org/ops/alice"))
	bob := ca.Issue(t, testpki.URI("spiffe://example.org/ops/bob"))
	file := testpki.WriteFile(t, t.TempDir(), "root.crl", revocationtest.PEM(revocationtest.CRL(t, ca, time.Now().Add(time.Hour), bob.Cert)))
	for _, withPatterns := range []bool{true, false} {
		v := &Verifier{Revocation: &revocation.Revocation{CRLFiles: []string{file}}}
		if withPatterns {
			v.SPIFFEID = []string{"spiffe://example.org/ops/*"}
		}
		provisioned(t, v)
		t.Cleanup(func() { _ = v.Cleanup() })
		logs := observedLogger(&v.logger)
		if cerr, serr, _ := handshake(t, v, ca, true, alice); cerr != nil || serr != nil {
			t.Fatalf("alice: %v %v", cerr, serr)
		}
		cerr, serr, _ := handshake(t, v, ca, true, bob)
		if cerr == nil || serr == nil || !strings.Contains(serr.Error(), "is revoked") {
			t.Fatalf("bob: %v %v", cerr, serr)
		}
		if !strings.Contains(logs.last(), `"msg":"refused TLS handshake: client certificate revoked or its CRL unavailable"`) || !strings.Contains(logs.last(), `"spiffe_id":"spiffe://example.org/ops/bob"`) {
			t.Fatalf("log: %s", logs.last())
		}
	}
}

func TestRevocationCaddyfile(t *testing.T) {
	var v Verifier
	err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser("peer {\n crl /a.pem /b.pem\n crl_distribution_points\n crl_refresh 10m\n crl_fetch_timeout 3s\n crl_soft_fail\n}"))
	if err != nil {
		t.Fatal(err)
	}
	r := v.Revocation
	if r == nil || len(r.CRLFiles) != 2 || !r.DistributionPoints || !r.SoftFail || time.Duration(r.Refresh) != 10*time.Minute || time.Duration(r.FetchTimeout) != 3*time.Second || !v.Patterns.Empty() {
		t.Fatalf("%+v %+v", v, r)
	}
	for in, want := range map[string]string{
		"peer {\n crl\n}":                                      "crl needs at least one file",
		"peer {\n crl_soft_fail\n}":                            "need a CRL source",
		"peer {\n crl /a\n crl_refresh soon\n}":                `crl_refresh: bad duration "soon"`,
		"peer {\n crl /a\n crl_refresh 1m\n crl_refresh 2m\n}": "duplicate option 'crl_refresh'",
		"peer {\n crl_distribution_points x\n}":                "crl_distribution_points takes no argument",
		"peer {\n ocsp_stapling\n}":                            `unknown option "ocsp_stapling"`,
	} {
		var v Verifier
		err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "verifier peer") {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

func TestVerifierOCSPHandshake(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	r := revocationtest.NewResponder(t, ca, nil)
	alice := ca.Issue(t, testpki.URI("spiffe://example.org/ops/alice"), testpki.OCSPServer(r.URL))
	bob := ca.Issue(t, testpki.URI("spiffe://example.org/ops/bob"), testpki.OCSPServer(r.URL))
	carol := ca.Issue(t, testpki.URI("spiffe://example.org/ops/carol"), testpki.OCSPServer(revocationtest.ClosedURL(t)))
	r.Set(alice.Cert, ocsp.Good)
	r.Set(bob.Cert, ocsp.Revoked)
	for _, soft := range []bool{false, true} {
		v := &Verifier{Revocation: &revocation.Revocation{OCSP: &revocation.OCSP{SoftFail: soft}}}
		provisioned(t, v)
		t.Cleanup(func() { _ = v.Cleanup() })
		logs := observedLogger(&v.logger)
		if cerr, serr, _ := handshake(t, v, ca, true, alice); cerr != nil || serr != nil {
			t.Fatalf("alice: %v %v", cerr, serr)
		}
		cerr, serr, _ := handshake(t, v, ca, true, bob)
		if cerr == nil || serr == nil || !strings.Contains(serr.Error(), "is revoked by the OCSP responder") {
			t.Fatalf("bob: %v %v", cerr, serr)
		}
		if l := logs.last(); !strings.Contains(l, `"msg":"refused TLS handshake: client certificate revoked or unknown by OCSP, or its OCSP status unavailable"`) ||
			!strings.Contains(l, `"spiffe_id":"spiffe://example.org/ops/bob"`) {
			t.Fatalf("log: %s", l)
		}
		cerr, serr, _ = handshake(t, v, ca, true, carol)
		if soft {
			if cerr != nil || serr != nil {
				t.Fatalf("carol, soft fail: %v %v", cerr, serr)
			}
			if l := logs.last(); !strings.Contains(l, `"level":"warn"`) || !strings.Contains(l, "ocsp_soft_fail") || !strings.Contains(l, `"spiffe_id":"spiffe://example.org/ops/carol"`) {
				t.Fatalf("log: %s", l)
			}
		} else if cerr == nil || serr == nil || !strings.Contains(serr.Error(), "OCSP status unavailable") {
			t.Fatalf("carol, fail closed: %v %v", cerr, serr)
		}
	}
}

func TestOCSPCaddyfile(t *testing.T) {
	var v Verifier
	err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser("peer spiffe://example.org/** {\n ocsp leaf\n ocsp_responder http://ocsp.example.org/\n ocsp_fetch_timeout 2s\n ocsp_cache 500\n ocsp_soft_fail\n}"))
	if err != nil {
		t.Fatal(err)
	}
	o := v.Revocation.OCSP
	if o == nil || !o.LeafOnly || o.Responder != "http://ocsp.example.org/" || time.Duration(o.FetchTimeout) != 2*time.Second || o.CacheSize != 500 || !o.SoftFail || len(v.Revocation.CRLFiles) > 0 || v.Revocation.DistributionPoints {
		t.Fatalf("%+v", o)
	}
	v = Verifier{}
	if err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser("peer {\n ocsp\n ocsp_cache off\n crl /a.pem\n}")); err != nil {
		t.Fatal(err)
	}
	if o := v.Revocation.OCSP; o.LeafOnly || o.CacheSize != -1 || len(v.Revocation.CRLFiles) != 1 {
		t.Fatalf("%+v", o)
	}
	for in, want := range map[string]string{
		"peer {\n ocsp_responder http://x/\n}":                             "need ocsp: add `ocsp`",
		"peer {\n ocsp_soft_fail\n}":                                       "need ocsp",
		"peer {\n ocsp\n crl_soft_fail\n}":                                 "need a CRL source",
		"peer {\n ocsp all\n}":                                             `ocsp: unknown argument "all"`,
		"peer {\n ocsp leaf x\n}":                                          "ocsp takes at most one argument",
		"peer {\n ocsp\n ocsp\n}":                                          "duplicate option 'ocsp'",
		"peer {\n ocsp\n ocsp_responder\n}":                                "ocsp_responder needs a URL",
		"peer {\n ocsp\n ocsp_responder ocsp.local\n}":                     `ocsp_responder: bad URL "ocsp.local": want an http:// or https:// URL`,
		"peer {\n ocsp\n ocsp_responder ldap://x/\n}":                      `ocsp_responder: bad URL "ldap://x/"`,
		"peer {\n ocsp\n ocsp_responder http://a/ http://b/\n}":            "ocsp_responder takes one URL",
		"peer {\n ocsp\n ocsp_fetch_timeout soon\n}":                       `ocsp_fetch_timeout: bad duration "soon"`,
		"peer {\n ocsp\n ocsp_fetch_timeout -1s\n}":                        `ocsp_fetch_timeout: bad duration "-1s"`,
		"peer {\n ocsp\n ocsp_fetch_timeout 1s\n ocsp_fetch_timeout 2s\n}": "duplicate option 'ocsp_fetch_timeout'",
		"peer {\n ocsp\n ocsp_cache 0\n}":                                  `ocsp_cache: bad value "0"`,
		"peer {\n ocsp\n ocsp_cache lots\n}":                               `ocsp_cache: bad value "lots"`,
		"peer {\n ocsp\n ocsp_soft_fail yes\n}":                            "ocsp_soft_fail takes no argument",
		"peer {\n ocsp\n ocsp_stapling\n}":                                 `unknown option "ocsp_stapling"`,
	} {
		var v Verifier
		err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "verifier peer") {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}
