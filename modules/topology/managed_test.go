package topology_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/topology"
)

// TestManagedCertificateRenewal: a certificate Caddy manages (internal CA
// or ACME, read from its certificate cache) is judged by whether its
// renewal works, not by the 14-day window of certificates read from
// files: Caddy's internal leaf lives 12 hours and is renewed with a third
// of its life left, so it is always "within 14 days" and must not be a
// warning; one still in use well past the point where Caddy renews it is
// (its renewal is failing), and an expired one is an error.
func TestManagedCertificateRenewal(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ca := testpki.NewCA(t, "Caddy Local Authority - ECC Intermediate")
	leaf := func(notBefore, notAfter time.Time) *x509.Certificate {
		return ca.Issue(t, testpki.DNS("internal.localhost"), testpki.ServerOnly(), testpki.Validity(notBefore, notAfter)).Cert
	}
	const site = `{"apps":{%s"http":{"servers":{"s":{"listen":[":8443"],"routes":[{"match":[{"host":["internal.localhost"]}],"handle":[{"handler":"static_response"}]}]}}}}}`
	const internal = `"tls":{"automation":{"policies":[{"subjects":["internal.localhost"],"issuers":[{"module":"internal"}]%s}]}},`
	h := time.Hour
	for _, tc := range []struct {
		name     string
		tls      string
		cert     *x509.Certificate
		kind     string // the expected finding, "" for none
		severity topology.Severity
	}{
		// Caddy's default internal leaf: 12 h, one hour old
		{"fresh internal leaf", internal, leaf(now.Add(-h), now.Add(11*h)), "", ""},
		// inside its renewal window (the last third) for 5 minutes: the
		// next maintenance pass (every 10 minutes) renews it
		{"renewal just due", internal, leaf(now.Add(-8*h-5*time.Minute), now.Add(3*h+55*time.Minute)), "", ""},
		// inside its renewal window for 2 hours: renewal is failing
		{"renewal overdue", internal, leaf(now.Add(-10*h), now.Add(2*h)), topology.KindRenewalOverdue, topology.SeverityWarning},
		{"expired", internal, leaf(now.Add(-13*h), now.Add(-h)), topology.KindCertExpired, topology.SeverityError},
		// a 90-day certificate (ACME's) with 40 days left: before its window
		{"90 days, before its window", "", leaf(now.Add(-50*24*h), now.Add(40*24*h)), "", ""},
		// 10 days left: its window opened 20 days ago
		{"90 days, renewal overdue", "", leaf(now.Add(-80*24*h), now.Add(10*24*h)), topology.KindRenewalOverdue, topology.SeverityWarning},
		// the policy's renewal_window_ratio: renewed with half its life
		// left, so 3 hours into a 12-hour leaf is fine, 8 hours is late
		{"ratio 0.5, before its window", `"renewal_window_ratio":0.5`, leaf(now.Add(-3*h), now.Add(9*h)), "", ""},
		{"ratio 0.5, overdue", `"renewal_window_ratio":0.5`, leaf(now.Add(-8*h), now.Add(4*h)), topology.KindRenewalOverdue, topology.SeverityWarning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tlsApp := ""
			switch {
			case tc.tls == internal:
				tlsApp = fmt.Sprintf(internal, "")
			case tc.tls != "":
				tlsApp = fmt.Sprintf(internal, ","+tc.tls)
			}
			cfg := fmt.Sprintf(site, tlsApp)
			rep, err := topology.Analyze([]byte(cfg), topology.Options{Now: now, LiveCertificates: func(name string) []*x509.Certificate {
				if name == "internal.localhost" {
					return []*x509.Certificate{tc.cert}
				}
				return nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			var managed *topology.Certificate
			for _, c := range rep.Certificates {
				if c.Role == topology.RoleServer && c.NotAfter != nil {
					managed = c
				}
			}
			if managed == nil || managed.RenewBy == nil {
				t.Fatalf("the managed certificate has no renew_by: %+v", managed)
			}
			// the picture colours it the same way: orange only once its
			// renewal is overdue
			var svg bytes.Buffer
			if err := rep.WriteSVG(&svg, topology.SVGOptions{Now: now}); err != nil {
				t.Fatal(err)
			}
			expiry := map[string]string{"": "ok", topology.KindRenewalOverdue: "soon", topology.KindCertExpired: "expired"}[tc.kind]
			if want := `data-cert="` + managed.ID + `" data-role="server" data-expiry="` + expiry + `"`; !strings.Contains(svg.String(), want) {
				t.Errorf("the picture lacks %s", want)
			}
			got := oneFinding(t, rep, tc.kind, tc.severity, topology.KindCertExpired, topology.KindCertExpiring, topology.KindRenewalOverdue)
			if got == nil {
				return
			}
			if got.Fix == "" || got.Path == "" {
				t.Errorf("finding without a path or fix: %+v", got)
			}
		})
	}

	// a certificate read from a file keeps the 14-day window: 11 hours
	// left is a warning there, since nothing renews it
	dir := t.TempDir()
	cert, key := ca.Issue(t, testpki.DNS("file.localhost"), testpki.ServerOnly(), testpki.Validity(now.Add(-h), now.Add(11*h))).WriteFiles(t, dir, "file")
	cfg := `{"apps":{"tls":{"certificates":{"load_files":[{"certificate":"` + cert + `","key":"` + key + `"}]}},"http":{"servers":{"s":{"listen":[":8443"],"routes":[{"match":[{"host":["file.localhost"]}],"handle":[{"handler":"static_response"}]}]}}}}}`
	rep, err := topology.Analyze([]byte(cfg), topology.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if findingKinds(rep)[topology.KindCertExpiring] != topology.SeverityWarning {
		t.Errorf("a certificate file 11 hours from expiry: findings %+v", rep.Findings)
	}
}
