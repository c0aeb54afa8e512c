package topology_test

import (
	"crypto/x509"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/topology"
)

// TestNotReadFindings: a certificate the report cannot read is a finding,
// never a silent "not read" in the table. A file that is missing or does
// not parse makes the config unable to start (Caddy and the suite read
// them when they load it): an error. A store whose password placeholder
// does not resolve here may resolve in Caddy's environment: a warning.
// What the report does not read by design (certificates Caddy manages,
// files with NoFiles) is no finding.
func TestNotReadFindings(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Not Read CA")
	cert, key := ca.Issue(t, testpki.DNS("a.test"), testpki.ServerOnly()).WriteFiles(t, dir, "a")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	garbage := testpki.WriteFile(t, dir, "garbage.pem", []byte("not a certificate\n"))
	p12 := testpki.WriteFile(t, dir, "trust.p12", testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "pw", false))
	missing := filepath.Join(dir, "missing.pem")
	site := func(tlsApp, policy string) string {
		return `{"apps":{"tls":` + tlsApp + `,"http":{"servers":{"s":{"listen":[":8443"],"tls_connection_policies":[{` + policy + `}],
			"routes":[{"match":[{"host":["a.test"]}],"handle":[{"handler":"static_response"}]}]}}}}}`
	}
	loadFiles := func(c, k string) string {
		return `{"certificates":{"load_files":[{"certificate":"` + c + `","key":"` + k + `"}]}}`
	}
	clientCA := func(pool string) string {
		return `"client_authentication":{"ca":` + pool + `}`
	}
	for _, tc := range []struct {
		name     string
		cfg      string
		opts     topology.Options
		severity topology.Severity // "" for no finding
		kind     string
		names    string // what the message names
	}{
		{"certificate file missing", site(loadFiles(missing, key), ""), topology.Options{}, topology.SeverityError, topology.KindCertNotRead, missing},
		{"certificate file not PEM", site(loadFiles(garbage, key), ""), topology.Options{}, topology.SeverityError, topology.KindCertNotRead, garbage},
		{"key file missing", site(loadFiles(cert, missing), ""), topology.Options{}, topology.SeverityError, topology.KindKeyNotFound, missing},
		{"client CA file missing", site(loadFiles(cert, key), clientCA(`{"provider":"file","pem_files":["`+missing+`"]}`)), topology.Options{}, topology.SeverityError, topology.KindCertNotRead, missing},
		{"truststore password unset", site(loadFiles(cert, key), clientCA(`{"provider":"truststore","path":"`+p12+`","password":"{env.TOPO_UNSET_PASSWORD}"}`)), topology.Options{}, topology.SeverityWarning, topology.KindCertNotRead, "TOPO_UNSET_PASSWORD"},
		{"truststore wrong password", site(loadFiles(cert, key), clientCA(`{"provider":"truststore","path":"`+p12+`","password":"wrong"}`)), topology.Options{}, topology.SeverityError, topology.KindCertNotRead, p12},
		{"all readable", site(loadFiles(cert, key), clientCA(`{"provider":"file","pem_files":["`+caFile+`"]}`)), topology.Options{}, "", "", ""},
		{"files not read by choice", site(loadFiles(missing, missing), ""), topology.Options{NoFiles: true}, "", "", ""},
		{"managed by Caddy", site(`{}`, ""), topology.Options{}, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := topology.Analyze([]byte(tc.cfg), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := oneFinding(t, rep, tc.kind, tc.severity, topology.KindCertNotRead, topology.KindKeyNotFound)
			if got == nil {
				return
			}
			if f := got; !strings.Contains(f.Message, tc.names) || f.Fix == "" || f.Path == "" {
				t.Errorf("the finding does not name %s, or lacks a path or fix: %+v", tc.names, f)
			}
			if strings.Contains(got.Message, `"wrong"`) || strings.Contains(got.Fix, "wrong\"") {
				t.Errorf("the finding quotes the password: %+v", got)
			}
		})
	}
}

// oneFinding checks that, among the findings of the given kinds, rep has
// exactly one, of kind at sev, and returns it; with kind "" it checks that
// there is none and returns nil.
func oneFinding(t *testing.T, rep *topology.Report, kind string, sev topology.Severity, kinds ...string) *topology.Finding {
	t.Helper()
	var got []topology.Finding
	for _, f := range rep.Findings {
		if slices.Contains(kinds, f.Kind) {
			got = append(got, f)
		}
	}
	if kind == "" {
		if len(got) > 0 {
			t.Errorf("unexpected findings: %+v", got)
		}
		return nil
	}
	if len(got) != 1 || got[0].Kind != kind || got[0].Severity != sev {
		t.Fatalf("findings %+v, want one %s %s", got, sev, kind)
	}
	return &got[0]
}
