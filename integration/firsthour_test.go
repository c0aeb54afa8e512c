package integration

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/hellotest"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/material"
)

// The first-hour mistakes (issue 22): configs that are valid to Caddy but
// lock every client out at run time, refused by `caddy validate` through
// the real binary, in the JSON form users load through the admin API.

// fhValidate writes a config into c's directory and runs `caddy validate`
// on it (adapter caddyfile when the name says so); it returns the output
// and whether it validated.
func fhValidate(t *testing.T, c *bench.Caddy, name, config string) (string, bool) {
	t.Helper()
	path := filepath.Join(c.Dir, name)
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"validate", "--config", path}
	if strings.HasSuffix(name, "Caddyfile") {
		args = append(args, "--adapter", "caddyfile")
	}
	out, err := c.Command(t, args...)
	return out, err == nil
}

// TestLiveTrustMisuseRefusedByValidate: items 1 to 3 of issue 22, in the
// JSON form, refused by `caddy validate` with the fix; the working form
// validates.
func TestLiveTrustMisuseRefusedByValidate(t *testing.T) {
	c := bench.New(t)
	ca := base64.StdEncoding.EncodeToString(testpki.NewCA(t, "clients").Cert.Raw)
	live := `{"verifier": "live_trust", "trust_pool": {"provider": "inline", "trusted_ca_certs": ["` + ca + `"]}}`
	config := func(clientAuth string) string {
		return `{"apps": {"http": {"servers": {"s": {"listen": [":0"], "automatic_https": {"disable": true},
			"routes": [{"handle": [{"handler": "static_response", "body": "hello"}]}],
			"tls_connection_policies": [{"client_authentication": {` + clientAuth + `}}]}}}}}`
	}
	if out, ok := fhValidate(t, c, "good.json", config(`"verifiers": [`+live+`]`)); !ok {
		t.Fatalf("live_trust with no mode does not validate:\n%s", out)
	}
	for _, tc := range []struct{ name, clientAuth, want string }{
		{"mode require_and_verify", `"mode": "require_and_verify", "verifiers": [` + live + `]`, "remove `mode` (live_trust then requires a client certificate"},
		{"trust_pool", `"ca": {"provider": "inline", "trusted_ca_certs": ["` + ca + `"]}, "verifiers": [` + live + `]`, "remove trust_pool: live_trust verifies against its own pool"},
		{"peer first", `"verifiers": [{"verifier": "peer", "dns": ["*.test"]}, ` + live + `]`, "list `verifier live_trust` first"},
	} {
		out, ok := fhValidate(t, c, "bad.json", config(tc.clientAuth))
		if ok || !strings.Contains(out, tc.want) {
			t.Errorf("%s: validated=%v, want a refusal containing %q:\n%s", tc.name, ok, tc.want, out)
		}
	}
}

// TestPassthroughSiteMistakesAtLoad: items 5 and 5b of issue 22. A
// passthrough name that another site block on the port serves is refused
// by an admin /load of the Caddyfile (the running config stays) and by
// `caddy validate` of the JSON; an ALPN-restricted route on the name of a
// site with client_auth validates, with a warning.
func TestPassthroughSiteMistakesAtLoad(t *testing.T) {
	port := bench.Port(bench.FreeAddr(t))
	caddyfile := func(passthrough string) string {
		return `{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://a.test:` + port + ` {
	tls internal
	passthrough {
		` + passthrough + `
	}
	respond "a"
}
https://b.test:` + port + ` {
	tls internal {
		client_auth {
			mode request
		}
	}
	respond "b"
}
`
	}
	c := bench.Start(t, caddyfile("c.test 127.0.0.1:9"))
	err := c.Load(t, caddyfile("b.test 127.0.0.1:9"))
	if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), `\"`, `"`), `passthrough route "b.test" takes server name "b.test", which the site "b.test" on the same HTTP server also serves`) {
		t.Errorf("admin load of a passthrough name another site serves: %v", err)
	}
	if status, cfg := c.AdminGet(t, "/config/"); status != 200 || !strings.Contains(cfg, `"c.test"`) {
		t.Errorf("the running config was replaced: %d %s", status, cfg)
	}

	js := func(alpn string) string {
		return `{"apps": {"http": {"servers": {"s": {"listen": [":0"], "automatic_https": {"disable": true},
			"listener_wrappers": [{"wrapper": "layer4", "routes": [{"match": [{"clienthello": {"sni": ["b.test"]` + alpn + `}}],
				"handle": [{"handler": "passthrough", "route": "pg", "upstreams": [{"dial": "127.0.0.1:9"}]}]}]}, {"wrapper": "tls"}],
			"routes": [{"match": [{"host": ["b.test"]}], "handle": [{"handler": "static_response", "body": "b"}]}],
			"tls_connection_policies": [{"client_authentication": {"mode": "request"}}]}}}}}`
	}
	if out, ok := fhValidate(t, c, "overlap.json", js("")); ok || !strings.Contains(out, "so the site can never be reached") {
		t.Errorf("caddy validate of a passthrough name a site serves: validated=%v\n%s", ok, out)
	}
	out, ok := fhValidate(t, c, "alpn.json", js(`, "alpn": ["postgresql"]`))
	if !ok || !strings.Contains(out, "reaches the route's upstream without the site's client_auth check") || !strings.Contains(out, `"site":"b.test"`) {
		t.Errorf("caddy validate of an ALPN route on an mTLS site's name: validated=%v, want a warning:\n%s", ok, out)
	}
}

// fhExitCode is a command's exit status (0 when err is nil).
func fhExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestFirstHourLoadWarningsAndGate: items 4 and 5b of issue 22 load, with
// a warning each in Caddy's log, and the running instance's topology
// report has a finding for each, so `caddy trustline topology --fail-on
// warning` fails; items 1 to 3 and 5, which a load refuses, are findings
// of the report of the file too.
func TestFirstHourLoadWarningsAndGate(t *testing.T) {
	dir := t.TempDir()
	expired, clients := testpki.NewCA(t, "retired", testpki.Expired()), testpki.NewCA(t, "clients")
	caFile := testpki.WriteFile(t, dir, "clients-ca.pem", append(clients.CertPEM(), expired.CertPEM()...))
	port := bench.Port(bench.FreeAddr(t))
	c := bench.Start(t, `{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://open.test:`+port+` {
	tls internal
	passthrough {
		mtls.test 127.0.0.1:9 {
			alpn postgresql
		}
	}
	peer_authorize dns:*.test
	respond "open"
}
https://mtls.test:`+port+` {
	tls internal {
		client_auth {
			verifier live_trust bundle `+caFile+`
		}
	}
	respond "mtls"
}
`)
	for _, want := range []string{
		"peer_authorize is on a site that never asks for a client certificate",
		"passthrough route takes the name of a site that requires a client certificate",
	} {
		if !strings.Contains(c.Log(), want) {
			t.Errorf("the load did not warn %q", want)
		}
	}
	// item 10: one way to print a certificate: a time as RFC 3339 under
	// Caddy's JSON encoder, a serial in lowercase hex
	anchorLog := regexp.MustCompile(`"msg":"trust anchor has expired".*"serial":"` + material.SerialString(expired.Cert) + `","not_after":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"`)
	if !anchorLog.MatchString(c.Log()) {
		t.Errorf("the expired-CA warning does not print its serial in hex and its not_after as RFC 3339:\n%s", ptmGrep(c.Log(), "trust anchor has expired"))
	}
	// what the README says of live_trust and resumption: a client_auth
	// site issues no session tickets, so every connection is a full
	// handshake that live_trust verifies
	// (and the same client does resume on the site without client_auth)
	alice := clients.Issue(t, testpki.CN("alice"), testpki.ClientOnly()).TLS()
	for host, wantResumed := range map[string]bool{"mtls.test": false, "open.test": true} {
		cfg := &tls.Config{ServerName: host, InsecureSkipVerify: true, Certificates: []tls.Certificate{alice},
			ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		// Caddy issues the sites' internal certificates in the background
		eventually(t, 30*time.Second, host+" serves its certificate", func() (bool, string) {
			conn, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{ServerName: host, InsecureSkipVerify: true, Certificates: []tls.Certificate{alice}})
			if err != nil {
				return false, err.Error()
			}
			conn.Close()
			return true, ""
		})
		var resumed bool
		for i := range 2 {
			conn, err := tls.Dial("tcp", "127.0.0.1:"+port, cfg)
			if err != nil {
				t.Fatalf("connection %d to %s: %v", i, host, err)
			}
			if _, err := conn.Write([]byte("GET / HTTP/1.0\r\nHost: " + host + "\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			_, _ = io.ReadAll(conn) // tickets, if any, come after the handshake
			resumed = conn.ConnectionState().DidResume
			conn.Close()
		}
		if resumed != wantResumed {
			t.Errorf("%s: the second connection resumed=%v, want %v", host, resumed, wantResumed)
		}
	}
	out, err := c.Command(t, "trustline", "topology", "--address", c.Admin, "--fail-on", "warning")
	if code := fhExitCode(err); code != 2 || !strings.Contains(out, "peer_without_client_auth") || !strings.Contains(out, "passthrough_bypasses_client_auth") {
		t.Errorf("topology of the running instance: exit %d, want 2 with both findings:\n%s", code, out)
	}

	// item 4 in JSON, as an admin /load gets it: `caddy validate` warns
	peerJSON := `{"apps": {"http": {"servers": {"s": {"listen": [":0"], "automatic_https": {"disable": true},
		"routes": [{"match": [{"host": ["open.test"]}], "handle": [{"handler": "peer_authorize", "dns": ["*.test"]}]}],
		"tls_connection_policies": [{}]}}}}}`
	if out, ok := fhValidate(t, c, "peer.json", peerJSON); !ok || !strings.Contains(out, "peer_authorize is on a site that never asks for a client certificate") || !strings.Contains(out, `"hosts":["open.test"]`) {
		t.Errorf("caddy validate of peer_authorize without client_auth: validated=%v, want a warning:\n%s", ok, out)
	}

	site := func(clientAuth string) string {
		return "https://api.test {\n\ttls internal {\n\t\tclient_auth {\n" + clientAuth + "\t\t}\n\t}\n\trespond \"x\"\n}\n"
	}
	live := "\t\t\tverifier live_trust bundle " + caFile + "\n"
	for name, tc := range map[string]struct{ caddyfile, kind string }{
		"1": {site("\t\t\tmode require_and_verify\n" + live), "live_trust_misconfigured"},
		"2": {site("\t\t\ttrust_pool file " + caFile + "\n" + live), "live_trust_misconfigured"},
		"3": {site("\t\t\tverifier peer dns:*.test\n" + live), "live_trust_misconfigured"},
		"5": {"https://a.test {\n\ttls internal\n\tpassthrough {\n\t\tb.test 127.0.0.1:9\n\t}\n\trespond \"a\"\n}\nhttps://b.test {\n\ttls internal\n\trespond \"b\"\n}\n", "passthrough_hides_site"},
	} {
		path := filepath.Join(c.Dir, "item"+name+".Caddyfile")
		if err := os.WriteFile(path, []byte(tc.caddyfile), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := c.Command(t, "trustline", "topology", "--config", path, "--adapter", "caddyfile", "--fail-on", "warning")
		if code := fhExitCode(err); code != 2 || !strings.Contains(out, tc.kind) {
			t.Errorf("item %s: topology of the file: exit %d, want 2 with %s:\n%s", name, code, tc.kind, out)
		}
	}
}

// TestPassthroughLogFileTakesRefusals: the log options the passthrough
// README gives for a file of the per-connection lines (taken from the
// README itself) put a `default refuse` refusal in that file beside the
// proxied connections, and out of the default log (issue 22).
func TestPassthroughLogFileTakesRefusals(t *testing.T) {
	readme, err := os.ReadFile(bench.RepoPath("modules", "passthrough", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```caddyfile\n\\{\n(\tlog default \\{.*?\n)\\}\n```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("the passthrough README has no global log block")
	}
	logFile := filepath.Join(t.TempDir(), "passthrough.log")
	logOptions := strings.ReplaceAll(string(block[1]), "/var/log/caddy/passthrough.log", logFile)
	port := bench.Port(bench.FreeAddr(t))
	c := bench.Start(t, `{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
`+logOptions+`}
https://site.test:`+port+` {
	tls internal
	passthrough {
		db.test 127.0.0.1:9
		default refuse
	}
	respond "site"
}
`)
	addr := "127.0.0.1:" + port
	if _, alert := ptSendHello(t, addr, hellotest.Go(t, &tls.Config{ServerName: "unknown.test"})); alert != 112 {
		t.Fatalf("an unknown name got alert %d, want unrecognized_name (112)", alert)
	}
	eventually(t, 5*time.Second, "the refusal in the passthrough log file", func() (bool, string) {
		raw, _ := os.ReadFile(logFile)
		return strings.Contains(string(raw), `"msg":"passthrough connection refused"`), string(raw)
	})
	if strings.Contains(c.Log(), "passthrough connection refused") {
		t.Error("the refusal is in the default log too")
	}
	// a failed dial names the upstream (nothing listens on port 9 here)
	if conn, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_ = tls.Client(conn, &tls.Config{ServerName: "db.test", InsecureSkipVerify: true}).Handshake()
		conn.Close()
	}
	eventually(t, 5*time.Second, "the failed dial, with its upstream, in the passthrough log file", func() (bool, string) {
		raw, _ := os.ReadFile(logFile)
		return regexp.MustCompile(`"msg":"passthrough connection".*"upstream":"127\.0\.0\.1:9".*"close_reason":"dial_failed"`).Match(raw), string(raw)
	})
}

// TestMistakeMessagesThroughTheBinary: a JKS truststore (made by keytool)
// given to bundle says to use the truststore source, and an option in the
// wrong block says where it belongs (issue 22, item 10), through `caddy
// validate` and `caddy adapt`.
func TestMistakeMessagesThroughTheBinary(t *testing.T) {
	c := bench.New(t)
	caFile := testpki.WriteFile(t, c.Dir, "ca.pem", testpki.NewCA(t, "clients").CertPEM())
	jks := filepath.Join(c.Dir, "trust.jks")
	bench.Keytool(t, "-importcert", "-noprompt", "-alias", "ca", "-file", caFile, "-keystore", jks, "-storetype", "jks", "-storepass", "changeit")
	out, ok := fhValidate(t, c, "jks.Caddyfile", "https://api.test {\n\ttls internal {\n\t\tclient_auth {\n\t\t\tverifier live_trust bundle "+jks+"\n\t\t}\n\t}\n\trespond \"x\"\n}\n")
	if ok || !strings.Contains(out, "a JKS store (a keystore or truststore), not PEM: bundle reads PEM certificates; for a truststore use `truststore "+jks) {
		t.Errorf("a JKS given to bundle: validated=%v\n%s", ok, out)
	}
	path := filepath.Join(c.Dir, "misplaced.Caddyfile")
	if err := os.WriteFile(path, []byte("https://api.test {\n\tpeer_authorize dns:*.test {\n\t\tcrl /etc/tl/clients.crl\n\t}\n\trespond \"x\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := c.Command(t, "adapt", "--config", path)
	if err == nil || !strings.Contains(out, "crl is an option of `verifier peer`: put it in `verifier peer { ... }` inside `tls { client_auth { ... } }`") {
		t.Errorf("crl in peer_authorize: %v\n%s", err, out)
	}
}
