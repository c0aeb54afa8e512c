package integration

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/modules/topology"
)

// example is one running example: its run.sh (the one command of its
// README) with the certificates it made in Dir.
type example struct {
	name string
	Dir  string
	env  []string
	proc *bench.Process
}

// runExample runs examples/<name>/run.sh with the suite's binary, a temp
// dir for its files and free ports, and waits until it says it is ready.
// env holds KEY=VALUE entries (ports, admin addresses).
func runExample(t *testing.T, name string, env ...string) *example {
	t.Helper()
	bench.Need(t, "openssl")
	bench.Need(t, "curl")
	ex := &example{name: name, Dir: t.TempDir()}
	ex.env = append([]string{
		"TRUSTLINE_CADDY=" + bench.Binary(t),
		"EX_DIR=" + ex.Dir,
	}, env...)
	ex.proc = bench.StartProcessEnv(t, ex.env, bench.RepoPath("examples", name, "run.sh"))
	ex.proc.WaitLog(t, "Ctrl-C stops", 60*time.Second)
	return ex
}

// file is the path of a file the example made.
func (ex *example) file(name string) string { return filepath.Join(ex.Dir, name) }

// caddy runs the suite's binary with the example's environment.
func (ex *example) caddy(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bench.Binary(t), args...)
	cmd.Env = append(cmd.Environ(), ex.env...)
	cmd.Env = append(cmd.Env, "HOME="+ex.Dir, "XDG_DATA_HOME="+ex.file("cli-data"), "XDG_CONFIG_HOME="+ex.file("cli-config"))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := exitCode(t, err)
	if code == 1 {
		t.Fatalf("caddy %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String(), code
}

// report asks the example's running Caddy (admin at admin) for its
// topology, and analyses the example's Caddyfile with the CLI too; both
// must agree on the findings.
func (ex *example) report(t *testing.T, admin, caddyfile string) *topology.Report {
	t.Helper()
	out, _ := ex.caddy(t, "trustline", "topology", "--address", admin, "--format", "json")
	running := topologyJSON(t, out)
	out, _ = ex.caddy(t, "trustline", "topology", "--config", bench.RepoPath("examples", ex.name, caddyfile), "--adapter", "caddyfile", "--format", "json")
	fromFile := topologyJSON(t, out)
	if a, b := kinds(running), kinds(fromFile); len(a) != len(b) {
		t.Errorf("%s: the running instance's findings %v differ from the file's %v", caddyfile, a, b)
	}
	return running
}

// failOn runs the CLI on the example's Caddyfile with --fail-on level and
// returns its exit status.
func (ex *example) failOn(t *testing.T, caddyfile, level string) int {
	t.Helper()
	_, code := ex.caddy(t, "trustline", "topology", "--config", bench.RepoPath("examples", ex.name, caddyfile), "--fail-on", level)
	return code
}

// curlOK runs curl and fails the test unless it succeeds; it returns the
// body.
func curlOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := bench.Curl(t, append([]string{"--fail"}, args...)...)
	if code != 0 {
		t.Fatalf("curl %v: exit %d: %s", args, code, errOut)
	}
	return out
}

// curlRefused runs curl and fails the test if it succeeds; it returns
// curl's error output.
func curlRefused(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := bench.Curl(t, append([]string{"--fail"}, args...)...)
	if code == 0 {
		t.Fatalf("curl %v: accepted, want refused: %s", args, out)
	}
	return errOut
}

// hasFinding reports whether rep has a finding of kind at severity,
// whose path starts with pathPrefix.
func hasFinding(rep *topology.Report, kind string, sev topology.Severity, pathPrefix string) bool {
	for _, f := range rep.Findings {
		if f.Kind == kind && f.Severity == sev && strings.HasPrefix(f.Path, pathPrefix) {
			return true
		}
	}
	return false
}

// TestExampleLBTermination: examples/lb-termination. HAProxy terminates
// TLS and speaks plain HTTP to Caddy, which takes the client IP from
// X-Forwarded-For only when HAProxy (127.0.0.2) sends it; the report flags
// the plaintext leg.
func TestExampleLBTermination(t *testing.T) {
	bench.Need(t, "haproxy")
	lb, site, admin := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	ex := runExample(t, "lb-termination", "LB_PORT="+bench.Port(lb), "CADDY_PORT="+bench.Port(site), "TL_ADMIN="+admin)
	viaLB := "https://localhost:" + bench.Port(lb) + "/"
	direct := "http://" + site + "/"

	// through HAProxy: the client (127.0.0.3) is known by its address,
	// even when it sends its own X-Forwarded-For
	if got := curlOK(t, "--interface", "127.0.0.3", "--cacert", ex.file("ca.crt"), viaLB); !strings.Contains(got, "client_ip=127.0.0.3 remote=127.0.0.2") {
		t.Errorf("via HAProxy: %q", got)
	}
	if got := curlOK(t, "--interface", "127.0.0.3", "--cacert", ex.file("ca.crt"), "-H", "X-Forwarded-For: 6.6.6.6", viaLB); !strings.Contains(got, "client_ip=127.0.0.3 ") {
		t.Errorf("via HAProxy with a forged X-Forwarded-For: %q", got)
	}
	// straight to Caddy: the forged header is not trusted
	if got := curlOK(t, "--interface", "127.0.0.3", "-H", "X-Forwarded-For: 6.6.6.6", direct); !strings.Contains(got, "client_ip=127.0.0.3 remote=127.0.0.3") {
		t.Errorf("direct with a forged X-Forwarded-For: %q", got)
	}
	// the access log shows the client IP, never the forged one
	ex.proc.WaitLog(t, `"client_ip":"127.0.0.3"`, 5*time.Second)
	if strings.Contains(ex.proc.Log(), `"client_ip":"6.6.6.6"`) {
		t.Error("the access log took a forged X-Forwarded-For as the client IP")
	}

	rep := ex.report(t, admin, "Caddyfile")
	if !hasFinding(rep, topology.KindPlaintextLeg, topology.SeverityWarning, "apps.http.servers.srv0") {
		t.Errorf("the plaintext leg is not flagged: %+v", rep.Findings)
	}
	if l := rep.Listeners[0]; l.Inbound != topology.ModePlainHTTP || len(l.TrustedProxies) != 1 || l.TrustedProxies[0] != "127.0.0.2/32" {
		t.Errorf("listener: %+v", l)
	}
	if code := ex.failOn(t, "Caddyfile", "warning"); code != 2 {
		t.Errorf("--fail-on warning: exit %d, want 2", code)
	}
}

// opensslConnect runs openssl s_client and returns its output.
func opensslConnect(t *testing.T, args ...string) string {
	t.Helper()
	bin := bench.Need(t, "openssl")
	cmd := exec.Command(bin, append([]string{"s_client", "-brief"}, args...)...)
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	return string(out)
}

var peerCertLine = regexp.MustCompile(`(?m)^Peer certificate: (.*)$`)

// peerSubject is the subject of the certificate s_client was shown.
func peerSubject(t *testing.T, out string) string {
	t.Helper()
	m := peerCertLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("openssl s_client saw no certificate:\n%s", out)
	}
	return m[1]
}

// TestExampleLBPassthrough: examples/lb-passthrough. HAProxy in mode tcp
// passes TLS through; the certificate a client sees through HAProxy is
// Caddy's, and Caddy knows the client's address from PROXY protocol v2.
func TestExampleLBPassthrough(t *testing.T) {
	bench.Need(t, "haproxy")
	lb, site, admin := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	ex := runExample(t, "lb-passthrough", "LB_PORT="+bench.Port(lb), "CADDY_PORT="+bench.Port(site), "TL_ADMIN="+admin)

	out := opensslConnect(t, "-connect", lb, "-servername", "localhost", "-CAfile", ex.file("ca.crt"), "-verify_return_error")
	if subject := peerSubject(t, out); !strings.Contains(subject, "O = Caddy behind HAProxy") {
		t.Errorf("through HAProxy the certificate is %q, want Caddy's", subject)
	}
	if !strings.Contains(out, "Verification: OK") {
		t.Errorf("Caddy's certificate does not verify through HAProxy:\n%s", out)
	}
	url := "https://localhost:" + bench.Port(lb) + "/"
	got := curlOK(t, "--interface", "127.0.0.3", "--cacert", ex.file("ca.crt"), "--resolve", "localhost:"+bench.Port(lb)+":127.0.0.1", url)
	if !strings.Contains(got, "served by Caddy") || !strings.Contains(got, "client 127.0.0.3") {
		t.Errorf("through HAProxy: %q", got)
	}

	rep := ex.report(t, admin, "Caddyfile")
	l := rep.Listeners[0]
	if l.Inbound != "https" || len(l.Routes) != 1 || l.Routes[0].Inbound.Mode != topology.ModeTLS {
		t.Fatalf("Caddy terminates TLS: %+v", l)
	}
	if c := rep.Certificate(l.Routes[0].Inbound.Certificates[0]); c == nil || !strings.Contains(c.Subject, "O=Caddy behind HAProxy") || c.NotAfter == nil {
		t.Errorf("server certificate: %+v", c)
	}
	if !strings.Contains(strings.Join(l.Notes, ";"), "PROXY protocol header from 127.0.0.1/32") {
		t.Errorf("listener notes: %v", l.Notes)
	}
	if code := ex.failOn(t, "Caddyfile", "warning"); code != 0 {
		t.Errorf("--fail-on warning: exit %d, want 0 (%+v)", code, rep.Findings)
	}
}

// TestExampleLBReencrypt: examples/lb-reencrypt. HAProxy terminates and
// re-encrypts to Caddy, verifying Caddy's internal-CA certificate and
// presenting its own client certificate; Caddy refuses anyone else.
func TestExampleLBReencrypt(t *testing.T) {
	bench.Need(t, "haproxy")
	lb, site, admin := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	ex := runExample(t, "lb-reencrypt", "LB_PORT="+bench.Port(lb), "CADDY_PORT="+bench.Port(site), "TL_ADMIN="+admin)

	if got := curlOK(t, "--cacert", ex.file("ca.crt"), "https://localhost:"+bench.Port(lb)+"/"); !strings.Contains(got, "hello CN=haproxy-lb") {
		t.Errorf("via HAProxy: %q", got)
	}
	direct := []string{"--cacert", ex.file("internal-ca.crt"), "--resolve", "caddy.internal:" + bench.Port(site) + ":127.0.0.1", "https://caddy.internal:" + bench.Port(site) + "/"}
	curlRefused(t, direct...)
	curlRefused(t, append([]string{"--cert", ex.file("intruder.crt"), "--key", ex.file("intruder.key")}, direct...)...)
	// HAProxy's own certificate is what gets in
	if got := curlOK(t, append([]string{"--cert", ex.file("haproxy-client.crt"), "--key", ex.file("haproxy-client.key")}, direct...)...); !strings.Contains(got, "CN=haproxy-lb") {
		t.Errorf("with HAProxy's certificate: %q", got)
	}

	rep := ex.report(t, admin, "Caddyfile")
	in := rep.Listeners[0].Routes[0].Inbound
	if in.Mode != topology.ModeMTLS || in.ClientAuth == nil || !strings.Contains(in.ClientAuth.Verified, "live_trust") {
		t.Fatalf("inbound: %+v", in)
	}
	if p := in.ClientAuth.Pools; len(p) != 1 || p[0].Source != "bundle" || len(p[0].Anchors) != 1 || rep.Certificate(p[0].Anchors[0]).Subject != "CN=Example Internal CA" {
		t.Errorf("client pool: %+v", p)
	}
	for _, kind := range []string{topology.KindPlaintextLeg, topology.KindClientAuthNoVerify} {
		if _, ok := kinds(rep)[kind]; ok {
			t.Errorf("unexpected finding %s: %+v", kind, rep.Findings)
		}
	}
	if code := ex.failOn(t, "Caddyfile", "warning"); code != 0 {
		t.Errorf("--fail-on warning: exit %d, want 0 (%+v)", code, rep.Findings)
	}
}

// TestExampleIngressInternalCA: examples/ingress-internal-ca. a) The edge
// serves the API certificate and trusts the internal CA for the backend
// (certificate transfer); b) one Caddy serves the API certificate on its
// external address and the internal one, with mTLS, on its peer address.
func TestExampleIngressInternalCA(t *testing.T) {
	edge, backend, single := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	edgeAdmin, backendAdmin, singleAdmin := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	ex := runExample(t, "ingress-internal-ca",
		"EDGE_PORT="+bench.Port(edge), "BACKEND_PORT="+bench.Port(backend), "SINGLE_PORT="+bench.Port(single),
		"EDGE_ADMIN="+edgeAdmin, "BACKEND_ADMIN="+backendAdmin, "SINGLE_ADMIN="+singleAdmin)

	// a) the client trusts the public CA only; the edge the internal CA
	api := "api.example.test:" + bench.Port(edge)
	if got := curlOK(t, "--cacert", ex.file("public-ca.crt"), "--resolve", api+":127.0.0.1", "https://"+api+"/"); !strings.Contains(got, "backend: served with the internal CA's certificate") {
		t.Errorf("through the edge: %q", got)
	}
	be := "backend.internal:" + bench.Port(backend)
	curlRefused(t, "--cacert", ex.file("public-ca.crt"), "--resolve", be+":127.0.0.1", "https://"+be+"/")
	if subject := peerSubject(t, opensslConnect(t, "-connect", backend, "-servername", "backend.internal")); !strings.Contains(subject, "CN = backend.internal") {
		t.Errorf("backend certificate: %q", subject)
	}
	edgeRep := ex.report(t, edgeAdmin, "Caddyfile.edge")
	outs := edgeRep.Listeners[0].Routes[0].Outbound
	if len(outs) != 1 || outs[0].Mode != topology.OutTLS || outs[0].TrustPool == nil || outs[0].TrustPool.Source != "bundle" || !outs[0].TrustPool.Live || outs[0].ServerName != "backend.internal" {
		t.Fatalf("edge outbound: %+v", outs)
	}
	if c := edgeRep.Certificate(outs[0].TrustPool.Anchors[0]); c == nil || c.Subject != "CN=Example Internal CA" {
		t.Errorf("edge trust anchor: %+v", c)
	}
	if c := edgeRep.Certificate(edgeRep.Listeners[0].Routes[0].Inbound.Certificates[0]); c == nil || c.Issuer != "CN=Example Public CA" {
		t.Errorf("edge server certificate: %+v", c)
	}
	if code := ex.failOn(t, "Caddyfile.edge", "warning"); code != 0 {
		t.Errorf("edge --fail-on warning: exit %d (%+v)", code, edgeRep.Findings)
	}
	backendRep := ex.report(t, backendAdmin, "Caddyfile.backend")
	if c := backendRep.Certificate(backendRep.Listeners[0].Routes[0].Inbound.Certificates[0]); c == nil || c.Issuer != "CN=Example Internal CA" {
		t.Errorf("backend server certificate: %+v", c)
	}

	// b) one port, two addresses, two certificates
	port := bench.Port(single)
	if s := peerSubject(t, opensslConnect(t, "-connect", "127.0.0.1:"+port, "-servername", "api.example.test")); !strings.Contains(s, "CN = api.example.test") {
		t.Errorf("external address: %q", s)
	}
	peerOut := opensslConnect(t, "-connect", "127.0.0.2:"+port, "-servername", "node1.internal", "-cert", ex.file("node2.crt"), "-key", ex.file("node2.key"))
	if s := peerSubject(t, peerOut); !strings.Contains(s, "CN = node1.internal") {
		t.Errorf("peer address: %q", s)
	}
	peer := "node1.internal:" + port
	peerURL := []string{"--cacert", ex.file("internal-ca.crt"), "--resolve", peer + ":127.0.0.2", "https://" + peer + "/"}
	if got := curlOK(t, append([]string{"--cert", ex.file("node2.crt"), "--key", ex.file("node2.key")}, peerURL...)...); !strings.Contains(got, "hello CN=node2.internal") {
		t.Errorf("peer with node2's certificate: %q", got)
	}
	curlRefused(t, peerURL...)
	curlRefused(t, append([]string{"--cert", ex.file("api.crt"), "--key", ex.file("api.key")}, peerURL...)...)

	singleRep := ex.report(t, singleAdmin, "Caddyfile.single")
	byAddr := map[string]*topology.Listener{}
	for _, l := range singleRep.Listeners {
		byAddr[l.Address] = l
	}
	ext, peerL := byAddr["127.0.0.1:"+port], byAddr["127.0.0.2:"+port]
	if ext == nil || peerL == nil {
		t.Fatalf("listeners: %+v", singleRep.Listeners)
	}
	if in := ext.Routes[0].Inbound; in.Mode != topology.ModeTLS || singleRep.Certificate(in.Certificates[0]).Subject != "CN=api.example.test" {
		t.Errorf("external address: %+v", in)
	}
	if in := peerL.Routes[0].Inbound; in.Mode != topology.ModeMTLS || singleRep.Certificate(in.Certificates[0]).Subject != "CN=node1.internal" {
		t.Errorf("peer address: %+v", in)
	}
	if code := ex.failOn(t, "Caddyfile.single", "warning"); code != 0 {
		t.Errorf("single --fail-on warning: exit %d (%+v)", code, singleRep.Findings)
	}
}

// TestExampleL4MTLS: examples/l4-mtls. mTLS in, mTLS out at layer 4: an
// allowed SVID reaches the database stand-in, which sees Caddy's client
// certificate and the client's address (PROXY v2); another SPIFFE ID and
// no certificate are refused during the handshake, logged and counted;
// replacing the PKCS#12 keystore changes the identity the database sees
// on the next connection, with no reload.
func TestExampleL4MTLS(t *testing.T) {
	bench.Need(t, "nginx")
	db, backend, site, admin := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	ex := runExample(t, "l4-mtls", "DB_PORT="+bench.Port(db), "BACKEND_PORT="+bench.Port(backend),
		"SITE_PORT="+bench.Port(site), "TL_ADMIN="+admin, "CLIENT_P12_PASSWORD=test-secret")

	connect := func(client string) string {
		t.Helper()
		args := []string{"-connect", db, "-servername", "db.example.test", "-CAfile", ex.file("mesh.crt")}
		if client != "" {
			args = append(args, "-cert", ex.file(client+".crt"), "-key", ex.file(client+".key"))
		}
		// -quiet implies -ign_eof: s_client reads until the database
		// stand-in (or Caddy's alert) ends the connection
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bench.Need(t, "openssl"), append([]string{"s_client", "-quiet"}, args...)...)
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := connect("billing"); !strings.Contains(out, "db backend: TLS from CN=caddy-proxy, verified SUCCESS, client address 127.0.0.1") {
		t.Fatalf("billing through Caddy:\n%s", out)
	}
	if out := connect("intruder"); strings.Contains(out, "db backend") || !strings.Contains(out, "bad certificate") {
		t.Errorf("intruder (spiffe://example.test/batch/report) was not refused at the handshake:\n%s", out)
	}
	if out := connect(""); strings.Contains(out, "db backend") || !strings.Contains(out, "certificate required") {
		t.Errorf("a client without a certificate was not refused:\n%s", out)
	}
	ex.proc.WaitLog(t, `"spiffe_id":"spiffe://example.test/batch/report"`, 10*time.Second)
	ex.proc.WaitLog(t, `"msg":"TLS handshake failed"`, 10*time.Second)
	m := adminMetrics(t, admin)
	for sample, want := range map[string]float64{
		`trustline_passthrough_connections_total{outcome="proxied",route="db"}`: 1,
		`trustline_peer_decisions_total{outcome="refused",where="verifier"}`:    1,
		`trustline_l4_tls_handshakes_total{result="failed"}`:                    2,
	} {
		if got := metricValue(t, m, sample); got < want {
			t.Errorf("%s = %v, want at least %v", sample, got, want)
		}
	}

	// a new keystore, as an operator's renewal would drop it in place
	dir := ex.Dir
	bench.OpenSSL(t, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=caddy-proxy-renewed",
		"-keyout", filepath.Join(dir, "renewed.key"), "-out", filepath.Join(dir, "renewed.csr"))
	bench.OpenSSL(t, "x509", "-req", "-in", filepath.Join(dir, "renewed.csr"), "-CA", ex.file("mesh.crt"), "-CAkey", ex.file("mesh.key"),
		"-CAcreateserial", "-days", "30", "-out", filepath.Join(dir, "renewed.crt"))
	bench.OpenSSL(t, "pkcs12", "-export", "-in", filepath.Join(dir, "renewed.crt"), "-inkey", filepath.Join(dir, "renewed.key"),
		"-passout", "pass:test-secret", "-out", filepath.Join(dir, "renewed.p12"))
	if err := os.Rename(filepath.Join(dir, "renewed.p12"), ex.file("caddy-client.p12")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := connect("billing")
		if strings.Contains(out, "TLS from CN=caddy-proxy-renewed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the database never saw the renewed keystore's identity:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	rep := ex.report(t, admin, "Caddyfile")
	var l4 *topology.Listener
	for _, l := range rep.Listeners {
		if l.App == "layer4" {
			l4 = l
		}
	}
	if l4 == nil || len(l4.Routes) != 1 {
		t.Fatalf("no layer-4 listener with one route: %+v", rep.Listeners)
	}
	r := l4.Routes[0]
	if r.Inbound.Mode != topology.ModeMTLS || len(r.Outbound) != 1 || r.Outbound[0].Mode != topology.OutMTLS ||
		!strings.Contains(r.Outbound[0].ClientIdentity, "pkcs12") {
		t.Errorf("route: in %+v, out %+v", r.Inbound, r.Outbound)
	}
	if code := ex.failOn(t, "Caddyfile", "warning"); code != 0 {
		t.Errorf("--fail-on warning: exit %d, want 0 (%+v)", code, rep.Findings)
	}
}

// adminMetrics is the /metrics exposition of the Caddy admin at addr.
func adminMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
