package topology_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/trustline/trustline"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/topology"
)

// goldenNow is the reference time of the golden reports; the fixtures'
// validity is fixed relative to it, so the reports are the same every run.
var goldenNow = time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)

func day(d int) time.Time { return goldenNow.Add(time.Duration(d) * 24 * time.Hour) }

// writeFixtures writes the certificates the golden configs name into dir.
func writeFixtures(t testing.TB, dir string) {
	t.Helper()
	internal := testpki.NewCA(t, "Internal CA", testpki.Validity(day(-400), day(3000)))
	lb := testpki.NewCA(t, "LB Client CA", testpki.Validity(day(-400), day(3000)))
	retired := testpki.NewCA(t, "Retired CA", testpki.Validity(day(-4000), day(-30)))
	public := testpki.NewCA(t, "Public Test CA", testpki.Validity(day(-400), day(3000)))
	testpki.WriteFile(t, dir, "internal-ca.pem", internal.CertPEM())
	testpki.WriteFile(t, dir, "lb-ca.pem", lb.CertPEM())
	testpki.WriteFile(t, dir, "retired-ca.pem", retired.CertPEM())
	public.Issue(t, testpki.CN("api.example.test"), testpki.DNS("api.example.test", "pool.example.test"), testpki.ServerOnly(),
		testpki.Validity(day(-30), day(335))).WriteFiles(t, dir, "server")
	internal.Issue(t, testpki.CN("soon.example.test"), testpki.DNS("soon.example.test"), testpki.ServerOnly(),
		testpki.Validity(day(-80), day(5))).WriteFiles(t, dir, "soon")
	internal.Issue(t, testpki.CN("edge"), testpki.ClientOnly(), testpki.Validity(day(-10), day(80))).WriteFiles(t, dir, "client")
	oldClient := internal.Issue(t, testpki.CN("old-client"), testpki.ClientOnly(), testpki.Validity(day(-100), day(-1)))
	oldClient.WriteFiles(t, dir, "old-client")
	// the internal CA's CRL, fresh for 3 more days; the retired CA's,
	// 40 days past its next update
	testpki.WriteFile(t, dir, "internal.crl", crlPEM(makeCRL(t, internal, 42, day(-4), day(3), oldClient.Cert)))
	testpki.WriteFile(t, dir, "retired.crl", makeCRL(t, retired, 9, day(-77), day(-40)))
}

// TestGoldenReports adapts each testdata/golden/*.caddyfile (or reads each
// *.json) with the certificates of writeFixtures, and compares the table
// report with the .golden file beside it (UPDATE_GOLDEN=1 rewrites it).
func TestGoldenReports(t *testing.T) {
	dir := t.TempDir()
	writeFixtures(t, dir)
	t.Setenv("TOPO_DIR", dir)
	inputs, _ := filepath.Glob("testdata/golden/*.caddyfile")
	jsons, _ := filepath.Glob("testdata/golden/*.json")
	inputs = append(inputs, jsons...)
	if len(inputs) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))
		t.Run(name, func(t *testing.T) {
			cfg := adaptFile(t, in, dir)
			rep, err := topology.Analyze(cfg, topology.Options{Now: goldenNow})
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(in, ".caddyfile") {
				// findings point to the Caddyfile's lines, as the CLI's do
				body, err := os.ReadFile(in)
				if err != nil {
					t.Fatal(err)
				}
				if err := rep.LocateCaddyfile(cfg, in, body); err != nil {
					t.Fatal(err)
				}
			}
			// the temp dir becomes $TOPO_DIR before the table wraps lines
			b, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			var norm topology.Report
			if err := json.Unmarshal([]byte(strings.ReplaceAll(string(b), dir, "$TOPO_DIR")), &norm); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := norm.WriteTable(&out); err != nil {
				t.Fatal(err)
			}
			got := out.String()
			goldenFile := filepath.Join("testdata", "golden", name+".golden")
			want, _ := os.ReadFile(goldenFile)
			if got != string(want) {
				if os.Getenv("UPDATE_GOLDEN") == "1" {
					if err := os.WriteFile(goldenFile, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				t.Errorf("report differs from %s (UPDATE_GOLDEN=1 rewrites it)\n--- got\n%s\n--- want\n%s", goldenFile, got, want)
			}
			// the JSON form carries the same report
			var back topology.Report
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if len(back.Findings) != len(rep.Findings) || len(back.Certificates) != len(rep.Certificates) {
				t.Error("the JSON report does not round-trip")
			}
		})
	}
}

// adaptFile returns the JSON config of a golden input.
func adaptFile(t *testing.T, file, dir string) []byte {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(file, ".json") {
		return []byte(strings.ReplaceAll(string(raw), "{$TOPO_DIR}", dir))
	}
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(raw, map[string]any{"filename": file})
	if err != nil {
		t.Fatalf("adapting %s: %v", file, err)
	}
	for _, w := range warnings {
		t.Logf("%s: %s", file, w.Message)
	}
	return cfg
}

// findingKinds returns the kinds of a report's findings at path prefix.
func findingKinds(rep *topology.Report) map[string]topology.Severity {
	out := map[string]topology.Severity{}
	for _, f := range rep.Findings {
		if cur, ok := out[f.Kind]; !ok || f.Severity.Rank() > cur.Rank() {
			out[f.Kind] = f.Severity
		}
	}
	return out
}

// TestFindings checks, beyond the golden text, the findings each config
// must (and must not) produce.
func TestFindings(t *testing.T) {
	dir := t.TempDir()
	writeFixtures(t, dir)
	t.Setenv("TOPO_DIR", dir)
	for _, tc := range []struct {
		file    string
		want    map[string]topology.Severity
		notWant []string
	}{
		{"lb_termination.caddyfile", map[string]topology.Severity{topology.KindPlaintextLeg: topology.SeverityWarning},
			[]string{topology.KindInsecureSkipVerify, topology.KindClientAuthNoVerify}},
		{"reencrypt.caddyfile", map[string]topology.Severity{topology.KindPlaintextLeg: topology.SeverityInfo},
			[]string{topology.KindClientAuthNoVerify, topology.KindClientAuthSystem, topology.KindCertExpiring}},
		{"ingress.caddyfile", map[string]topology.Severity{topology.KindPlaintextLeg: topology.SeverityWarning, topology.KindUpstreamSystemRoot: topology.SeverityInfo},
			[]string{topology.KindInsecureSkipVerify}},
		{"unsafe.caddyfile", map[string]topology.Severity{
			topology.KindInsecureSkipVerify: topology.SeverityError,
			topology.KindClientAuthNoVerify: topology.SeverityError,
			topology.KindClientAuthOptional: topology.SeverityInfo,
			topology.KindIdentityHeaders:    topology.SeverityError,
			topology.KindCertExpired:        topology.SeverityError,
			topology.KindCertExpiring:       topology.SeverityWarning,
			topology.KindTrustAnchorExpired: topology.SeverityWarning,
		}, nil},
		{"passthrough.caddyfile", map[string]topology.Severity{topology.KindPassthroughNoDef: topology.SeverityWarning, topology.KindPlaintextLeg: topology.SeverityWarning,
			topology.KindL4TLSNoResume: topology.SeverityInfo}, nil},
		{"suite_l4_mtls.caddyfile", nil, []string{topology.KindL4TLSNoResume, topology.KindPlaintextLeg, topology.KindClientAuthNoVerify, topology.KindCertNotFound}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rep, err := topology.Analyze(adaptFile(t, filepath.Join("testdata", "golden", tc.file), dir), topology.Options{Now: goldenNow})
			if err != nil {
				t.Fatal(err)
			}
			got := findingKinds(rep)
			for kind, sev := range tc.want {
				if got[kind] != sev {
					t.Errorf("finding %s: got severity %q, want %q", kind, got[kind], sev)
				}
			}
			for _, kind := range tc.notWant {
				if _, ok := got[kind]; ok {
					t.Errorf("unexpected finding %s", kind)
				}
			}
			for _, f := range rep.Findings {
				if f.Path == "" || f.Fix == "" || f.Message == "" {
					t.Errorf("finding %s lacks a path, message or fix: %+v", f.Kind, f)
				}
			}
		})
	}
}

// TestCertificatesRead: subjects and not-after come from the files, each
// certificate once per role, with every config path that uses it.
func TestCertificatesRead(t *testing.T) {
	dir := t.TempDir()
	writeFixtures(t, dir)
	t.Setenv("TOPO_DIR", dir)
	rep, err := topology.Analyze(adaptFile(t, "testdata/golden/unsafe.caddyfile", dir), topology.Options{Now: goldenNow})
	if err != nil {
		t.Fatal(err)
	}
	bySubject := map[string]*topology.Certificate{}
	for _, c := range rep.Certificates {
		bySubject[c.Role+" "+c.Subject] = c
	}
	check := func(key string, notAfter time.Time) {
		t.Helper()
		c := bySubject[key]
		if c == nil {
			t.Fatalf("no certificate %q in %v", key, keysOf(bySubject))
		}
		if c.NotAfter == nil || !c.NotAfter.Equal(notAfter) {
			t.Errorf("%s: not after %v, want %v", key, c.NotAfter, notAfter)
		}
	}
	check("server CN=soon.example.test", day(5))
	check("client CN=old-client", day(-1))
	check("trust_anchor CN=Retired CA", day(-30))
	check("trust_anchor CN=Internal CA", day(3000))
	if c := bySubject["trust_anchor CN=Internal CA"]; len(c.UsedBy) != 2 {
		t.Errorf("the internal CA is used by two pools, got %v", c.UsedBy)
	}
}

func keysOf(m map[string]*topology.Certificate) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestKeystoresRead: the suite's keystores and truststores are read when
// their password resolves, and reported "not read" with the reason when
// it does not; the password never appears in the report.
func TestKeystoresRead(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Store CA")
	leaf := ca.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	p12 := testpki.WriteFile(t, dir, "proxy.p12", testpki.PKCS12Keystore(t, leaf, "s3cret-pass", false))
	jks := testpki.WriteFile(t, dir, "trust.jks", testpki.JKSTruststore(t, map[string]*x509.Certificate{"ca": ca.Cert}, "s3cret-pass"))
	t.Setenv("TOPO_STORE_PASS", "s3cret-pass")
	cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":8443"],"tls_connection_policies":[{}],"routes":[{"handle":[
		{"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.1:443"}],"transport":{"protocol":"mtls",
		 "client_identity":{"source":"pkcs12","path":"` + p12 + `","password":"{env.TOPO_STORE_PASS}"},
		 "tls":{"ca":{"provider":"truststore","path":"` + jks + `","password":"{env.TOPO_STORE_PASS}"}}}},
		{"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.2:443"}],"transport":{"protocol":"mtls",
		 "client_identity":{"source":"pkcs12","path":"` + p12 + `","password":"{env.TOPO_NO_SUCH_VAR}"}}}
	]}]}}}}}`
	rep, err := topology.Analyze([]byte(cfg), topology.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var read, unread, anchors int
	for _, c := range rep.Certificates {
		switch {
		case c.Role == topology.RoleClient && c.Subject == "CN=proxy" && c.Suite:
			read++
		case c.Role == topology.RoleClient && strings.Contains(c.NotRead, "password"):
			unread++
		case c.Role == topology.RoleTrustAnchor && c.Subject == "CN=Store CA":
			anchors++
		}
	}
	if read != 1 || unread != 1 || anchors != 1 {
		var b bytes.Buffer
		_ = rep.WriteTable(&b)
		t.Errorf("read %d, unread %d, anchors %d; want 1 each\n%s", read, unread, anchors, b.String())
	}
	out, _ := json.Marshal(rep)
	var tbl bytes.Buffer
	_ = rep.WriteTable(&tbl)
	if strings.Contains(string(out), "s3cret") || strings.Contains(tbl.String(), "s3cret") {
		t.Error("the report contains the store password")
	}
	if rep.Listeners[0].Routes[0].Outbound[0].Mode != topology.OutMTLS {
		t.Errorf("mtls transport with a client identity: mode %s", rep.Listeners[0].Routes[0].Outbound[0].Mode)
	}
}

// BenchmarkAnalyze measures one report of a config with a dozen
// certificates read from files: what each /metrics scrape and each
// GET /trustline/topology costs.
func BenchmarkAnalyze(b *testing.B) {
	dir := b.TempDir()
	writeFixtures(b, dir)
	b.Setenv("TOPO_DIR", dir)
	raw, err := os.ReadFile("testdata/golden/unsafe.caddyfile")
	if err != nil {
		b.Fatal(err)
	}
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(raw, map[string]any{"filename": "unsafe.caddyfile"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := topology.Analyze(cfg, topology.Options{Now: goldenNow}); err != nil {
			b.Fatal(err)
		}
	}
}
