package integration

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/topology"
)

// topologyJSON parses a JSON report.
func topologyJSON(t *testing.T, out string) *topology.Report {
	t.Helper()
	var rep topology.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not a JSON report: %v\n%s", err, out)
	}
	return &rep
}

// kinds maps the finding kinds of a report to their highest severity.
func kinds(rep *topology.Report) map[string]topology.Severity {
	out := map[string]topology.Severity{}
	for _, f := range rep.Findings {
		if cur, ok := out[f.Kind]; !ok || f.Severity.Rank() > cur.Rank() {
			out[f.Kind] = f.Severity
		}
	}
	return out
}

// exitCode is the exit status of a finished command (0 when err is nil).
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("command did not run: %v", err)
	}
	return ee.ExitCode()
}

// TestTopologyCLI runs `caddy trustline topology` on Caddyfiles: the JSON
// and table reports, --fail-on for CI, and its errors.
func TestTopologyCLI(t *testing.T) {
	dir := t.TempDir()
	c := bench.New(t)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	risky := write("risky.Caddyfile", `{
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}
http://:8080 {
	reverse_proxy https://10.0.0.1:8443 {
		transport http {
			tls_insecure_skip_verify
		}
	}
}
`)
	long := testpki.Validity(time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	ca := testpki.NewCA(t, "cli ca", long)
	cert, key := ca.Issue(t, testpki.DNS("localhost"), long).WriteFiles(t, dir, "server")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	clean := write("clean.Caddyfile", fmt.Sprintf(`https://localhost:8443 {
	tls %s %s {
		client_auth {
			verifier live_trust bundle %s
		}
	}
	reverse_proxy 127.0.0.1:9000
}
`, cert, key, caFile))

	out, err := c.Command(t, "trustline", "topology", "--config", risky, "--adapter", "caddyfile", "--format", "json")
	if code := exitCode(t, err); code != 0 {
		t.Fatalf("exit %d without --fail-on:\n%s", code, out)
	}
	// the JSON is on stdout; Caddy's log lines (adapting) go to stderr
	jsonStart := strings.Index(out, "{\n")
	rep := topologyJSON(t, out[jsonStart:strings.LastIndex(out, "}")+1])
	got := kinds(rep)
	if got[topology.KindInsecureSkipVerify] != topology.SeverityError || got[topology.KindPlaintextLeg] != topology.SeverityWarning {
		t.Errorf("findings of the risky config: %v", got)
	}

	out, err = c.Command(t, "trustline", "topology", "--config", risky, "--fail-on", "error")
	if code := exitCode(t, err); code != 2 || !strings.Contains(out, "at or above error") || !strings.Contains(out, "FINDINGS (1 error, 1 warning") {
		t.Errorf("--fail-on error with an error finding: exit %d\n%s", code, out)
	}
	out, err = c.Command(t, "trustline", "topology", "--config", clean, "--fail-on", "warning")
	if code := exitCode(t, err); code != 0 || !strings.Contains(out, "live_trust") {
		t.Errorf("--fail-on warning with only info findings: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "CN=localhost") && !strings.Contains(out, "localhost") {
		t.Errorf("the table does not show the server certificate:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", risky, "--format", "xml"}, `want table or json`},
		{[]string{"--config", risky, "--fail-on", "info"}, `want warning or error`},
		{[]string{"--config", filepath.Join(dir, "nope.Caddyfile")}, "nope.Caddyfile"},
		{[]string{"--config", risky, "--address", "127.0.0.1:1"}, "exclude each other"},
		{[]string{"--adapter", "caddyfile"}, "--adapter needs --config"},
		{[]string{"--address", bench.FreeAddr(t)}, "asking the running instance"},
	} {
		out, err := c.Command(t, append([]string{"trustline", "topology"}, tc.args...)...)
		if code := exitCode(t, err); code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want 1 with %q:\n%s", tc.args, code, tc.want, out)
		}
	}
}

// TestTopologyEndpointAndMetrics: GET /trustline/topology reports the
// running config (read at each request: a reload shows at once), with
// Caddy's managed certificates from its cache; `caddy trustline topology
// --address` asks it; /metrics has a not-after gauge per certificate.
func TestTopologyEndpointAndMetrics(t *testing.T) {
	dir := t.TempDir()
	long := testpki.Validity(time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	ca := testpki.NewCA(t, "endpoint ca", long)
	srv := ca.Issue(t, testpki.CN("localhost"), testpki.DNS("localhost"), testpki.ServerOnly(), long)
	cert, key := srv.WriteFiles(t, dir, "server")
	client := ca.Issue(t, testpki.CN("edge client"), testpki.ClientOnly(), long)
	ccert, ckey := client.WriteFiles(t, dir, "client")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	siteA, siteB := bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%s {
	tls %s %s
	reverse_proxy https://127.0.0.1:%s {
		transport http {
			tls_trust_pool file %s
			tls_client_auth %s %s
			tls_server_name internal.localhost
		}
	}
}
https://internal.localhost:%s {
	tls internal
	respond "managed"
}
`, bench.Port(siteA), cert, key, bench.Port(siteB), caFile, ccert, ckey, bench.Port(siteB)))

	// the internal certificate is issued in the background: wait for it
	var rep *topology.Report
	eventually(t, 10*time.Second, "the managed certificate in the report", func() (bool, string) {
		status, body := c.AdminGet(t, "/trustline/topology")
		if status != 200 {
			return false, fmt.Sprintf("HTTP %d: %s", status, body)
		}
		rep = topologyJSON(t, body)
		for _, crt := range rep.Certificates {
			if crt.Role == topology.RoleServer && strings.HasPrefix(crt.Source, "managed by Caddy") && crt.NotAfter != nil {
				return true, ""
			}
		}
		return false, body
	})
	if len(rep.Listeners) != 2 {
		t.Errorf("listeners: %d, want 2", len(rep.Listeners))
	}

	status, table := c.AdminGet(t, "/trustline/topology?format=table")
	if status != 200 || !strings.Contains(table, "LISTENER http") || !strings.Contains(table, "client identity: file "+ccert) {
		t.Errorf("table: HTTP %d\n%s", status, table)
	}
	if status, body := c.AdminGet(t, "/trustline/topology?format=xml"); status != 400 || !strings.Contains(body, "want table or json") {
		t.Errorf("format=xml: HTTP %d %s", status, body)
	}

	// the CLI asks the running instance
	cliOut, err := c.Command(t, "trustline", "topology", "--address", c.Admin, "--format", "json")
	if exitCode(t, err) != 0 {
		t.Fatalf("CLI against the running instance: %v\n%s", err, cliOut)
	}
	if !strings.Contains(cliOut, `"client_identity": "file `+ccert+`"`) {
		t.Errorf("CLI report lacks the client identity:\n%s", cliOut)
	}

	// the gauges: the file server certificate, the client identity, the
	// trust anchor, and the managed certificate from Caddy's cache
	metrics := c.Metrics(t)
	for _, want := range []struct {
		labels string
		value  time.Time
	}{
		{`role="server",source="file ` + cert + `",subject="CN=localhost"`, srv.Cert.NotAfter},
		{`role="client",source="file ` + ccert + `",subject="CN=edge client"`, client.Cert.NotAfter},
		{`role="trust_anchor",source="file ` + caFile + `",subject="CN=endpoint ca"`, ca.Cert.NotAfter},
	} {
		re := regexp.MustCompile(`trustline_certificate_not_after_timestamp_seconds\{` + regexp.QuoteMeta(want.labels) + `\} (\S+)`)
		m := re.FindStringSubmatch(metrics)
		if m == nil {
			t.Errorf("no gauge {%s} in:\n%s", want.labels, grepLines(metrics, "trustline_certificate"))
			continue
		}
		if v, _ := strconv.ParseFloat(m[1], 64); int64(v) != want.value.Unix() {
			t.Errorf("gauge {%s} = %s, want %d", want.labels, m[1], want.value.Unix())
		}
	}
	if !regexp.MustCompile(`trustline_certificate_not_after_timestamp_seconds\{role="server",source="managed by Caddy \(internal CA local\)",subject="[^"]*"\} \d`).MatchString(metrics) {
		t.Errorf("no gauge for the managed certificate:\n%s", grepLines(metrics, "trustline_certificate"))
	}

	// stateless: after a reload the endpoint reports the new config
	if err := c.Load(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
}
http://127.0.0.1:%s {
	respond "plain"
}
`, bench.Port(siteA))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the reloaded config in the report", func() (bool, string) {
		status, body := c.AdminGet(t, "/trustline/topology")
		if status != 200 {
			return false, body
		}
		r := topologyJSON(t, body)
		return len(r.Listeners) == 1 && r.Listeners[0].Inbound == "http", body
	})
	if m := c.Metrics(t); strings.Contains(m, `source="file `+cert+`"`) {
		t.Errorf("gauges of the old config remain:\n%s", grepLines(m, "trustline_certificate"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestTopologyGateManagedCertificate: `caddy trustline topology --fail-on
// warning` against a running instance passes with a `tls internal` site.
// Caddy's internal leaf lives 12 hours and Caddy renews it, so the 14-day
// expiry window of certificate files would warn about it forever; the
// report judges it by its renewal instead (renew_by).
func TestTopologyGateManagedCertificate(t *testing.T) {
	site := bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%s {
	tls internal
	respond "managed"
}
`, bench.Port(site)))
	var managed *topology.Certificate
	eventually(t, 10*time.Second, "the managed certificate in the report", func() (bool, string) {
		status, body := c.AdminGet(t, "/trustline/topology")
		if status != 200 {
			return false, fmt.Sprintf("HTTP %d: %s", status, body)
		}
		for _, crt := range topologyJSON(t, body).Certificates {
			if crt.Role == topology.RoleServer && crt.NotAfter != nil {
				managed = crt
				return true, ""
			}
		}
		return false, body
	})
	if left := time.Until(*managed.NotAfter); left > 14*24*time.Hour {
		t.Fatalf("the internal leaf expires in %s: this test needs one within the 14-day window", left)
	}
	if managed.RenewBy == nil || !managed.RenewBy.After(time.Now()) || !managed.RenewBy.Before(*managed.NotAfter) {
		t.Errorf("the internal leaf (not after %s) has renew_by %v, want a time between now and its not-after", managed.NotAfter, managed.RenewBy)
	}
	out, err := c.Command(t, "trustline", "topology", "--address", c.Admin, "--fail-on", "warning")
	if code := exitCode(t, err); code != 0 {
		t.Errorf("--fail-on warning against a running instance with a tls internal site: exit %d\n%s", code, out)
	}
}

// gateFixtures: a directory with a CA and a server certificate for
// localhost (its files), and the binary to run the CLI with.
func gateFixtures(t *testing.T) (dir string, c *bench.Caddy, ca *testpki.CA, cert, key string) {
	dir, c = t.TempDir(), bench.New(t)
	long := testpki.Validity(time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	ca = testpki.NewCA(t, "gate ca", long)
	cert, key = ca.Issue(t, testpki.DNS("localhost"), long).WriteFiles(t, dir, "server")
	return dir, c, ca, cert, key
}

// TestTopologyGateUnreadableCertificate: a certificate the report cannot
// read is a finding the gate stops on. A config whose certificate or key
// file is missing cannot start (caddy validate refuses it): an error that
// names the file and the Caddyfile line.
func TestTopologyGateUnreadableCertificate(t *testing.T) {
	dir, c, _, cert, key := gateFixtures(t)
	missingCert, missingKey := filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key")
	for _, tc := range []struct {
		name, cert, key, file string
	}{
		{"certificate file missing", missingCert, key, missingCert},
		{"key file missing", cert, missingKey, missingKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caddyfile := testpki.WriteFile(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".Caddyfile", []byte(fmt.Sprintf(`https://localhost:8443 {
	tls %s %s
	respond "hello"
}
`, tc.cert, tc.key)))
			// Caddy itself refuses this config
			if out, err := c.Command(t, "validate", "--config", caddyfile, "--adapter", "caddyfile"); err == nil {
				t.Fatalf("caddy validate accepts a config with %s:\n%s", tc.name, out)
			}
			out, err := c.Command(t, "trustline", "topology", "--config", caddyfile, "--adapter", "caddyfile", "--fail-on", "error")
			if code := exitCode(t, err); code != 2 {
				t.Errorf("--fail-on error with %s: exit %d, want 2\n%s", tc.name, code, out)
			}
			if !strings.Contains(out, tc.file) || !strings.Contains(out, caddyfile+":2") {
				t.Errorf("the report does not name %s and %s:2 (the tls line):\n%s", tc.file, caddyfile, out)
			}
		})
	}
}

// TestTopologyGateStorePasswordUnresolved: a truststore whose password
// placeholder does not resolve where the report runs may still open where
// Caddy runs: a warning, which --fail-on warning stops on and --fail-on
// error lets through.
func TestTopologyGateStorePasswordUnresolved(t *testing.T) {
	dir, c, ca, cert, key := gateFixtures(t)
	store := testpki.WriteFile(t, dir, "clients.p12", testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "store-pass", false))
	caddyfile := testpki.WriteFile(t, dir, "Caddyfile", []byte(fmt.Sprintf(`https://localhost:8443 {
	tls %s %s {
		client_auth {
			trust_pool truststore %s {
				password {env.TOPO_GATE_UNSET_PASSWORD}
			}
		}
	}
	respond "hello"
}
`, cert, key, store)))
	for level, want := range map[string]int{"error": 0, "warning": 2} {
		out, err := c.Command(t, "trustline", "topology", "--config", caddyfile, "--adapter", "caddyfile", "--fail-on", level)
		if code := exitCode(t, err); code != want || !strings.Contains(out, "TOPO_GATE_UNSET_PASSWORD") {
			t.Errorf("--fail-on %s: exit %d, want %d, naming the placeholder:\n%s", level, code, want, out)
		}
	}
}
