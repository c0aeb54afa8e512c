package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/explain"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// explainPKI is the world of the agreement test: the clients' CA (a root
// and its issuing intermediate), another CA whose clients no site trusts,
// two SPIFFE trust domains, and the backends of the outbound cases.
type explainPKI struct {
	*peerPKI
	otherInter             *testpki.CA
	ours, partner          *testpki.CA
	jks, bundles, crl      string
	proxyCert, proxyKey    string
	backendCA, backendCert string
	backendKey             string
	proxyCA, strangerCA    *testpki.CA
	leaves                 map[string][]*x509.Certificate // name -> the chain the client sends
	keys                   map[string]*testpki.Leaf
}

func newExplainPKI(t *testing.T) *explainPKI {
	p := &explainPKI{peerPKI: newPeerPKI(t), leaves: map[string][]*x509.Certificate{}, keys: map[string]*testpki.Leaf{}}
	other := testpki.NewCA(t, "Other Root")
	p.otherInter = other.NewIntermediate(t, "Other Issuing CA")
	p.ours, p.partner = testpki.NewCA(t, "example.org authority"), testpki.NewCA(t, "partner authority")
	p.bundles = fmt.Sprintf(`spiffe_bundle {
				bundle example.org %s
				bundle partner.example %s
			}`, spiffeBundleFile(t, p.dir, "example.org", p.ours), spiffeBundleFile(t, p.dir, "partner.example", p.partner))
	p.jks = testpki.WriteFile(t, p.dir, "clients.jks", testpki.JKSTruststore(t, map[string]*x509.Certificate{"peerroot": p.root.Cert}, "changeit"))
	gone := p.inter.Issue(t, testpki.CN("gone"), testpki.URI("spiffe://example.org/ops/gone"), testpki.ClientOnly())
	p.crl = testpki.WriteFile(t, p.dir, "issuing.crl", revocationtest.PEM(revocationtest.CRL(t, p.inter, time.Now().Add(time.Hour), gone.Cert)))
	add := func(name string, leaf *testpki.Leaf, chain ...*x509.Certificate) {
		p.keys[name] = leaf
		p.leaves[name] = append([]*x509.Certificate{leaf.Cert}, chain...)
	}
	add("alice", p.peerPKI.leaves["alice"], p.inter.Cert)
	add("bob", p.peerPKI.leaves["bob"], p.inter.Cert)
	add("alice-alone", p.peerPKI.leaves["alice"])
	add("expired", p.peerPKI.leaves["expired"], p.inter.Cert)
	add("serveronly", p.peerPKI.leaves["serveronly"], p.inter.Cert)
	add("gone", gone, p.inter.Cert)
	add("stranger", p.otherInter.Issue(t, testpki.CN("stranger"), testpki.ClientOnly()), p.otherInter.Cert)
	add("svid", p.ours.Issue(t, testpki.URI("spiffe://example.org/ops/svc"), testpki.ClientOnly()))
	add("partner-minted", p.partner.Issue(t, testpki.URI("spiffe://example.org/ops/svc"), testpki.ClientOnly()))

	// the outbound leg: the proxy's identity, the backends' CA
	p.proxyCA = testpki.NewCA(t, "Proxy CA")
	p.strangerCA = testpki.NewCA(t, "Stranger CA")
	bca := testpki.NewCA(t, "Backend CA")
	p.backendCA = testpki.WriteFile(t, p.dir, "backend-ca.pem", bca.CertPEM())
	p.proxyCert, p.proxyKey = p.proxyCA.Issue(t, testpki.CN("edge proxy"), testpki.ClientOnly()).WriteFiles(t, p.dir, "proxy")
	p.backendCert, p.backendKey = bca.Issue(t, testpki.CN("backend"), testpki.IP("127.0.0.1"), testpki.ServerOnly()).WriteFiles(t, p.dir, "backend")
	return p
}

// chainFile writes the chain a client sends, as its certificate file.
func (p *explainPKI) chainFile(t *testing.T, name string) string {
	if name == "" {
		return ""
	}
	return testpki.WriteFile(t, p.dir, name+"-chain.pem", testpki.CertsPEM(p.leaves[name]...))
}

// backend starts a TLS backend that answers 200; clientCAs nil: it asks
// for no client certificate.
func explainBackend(t *testing.T, cert tls.Certificate, clientCAs *x509.CertPool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "backend") }), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// realGet is a real TLS client: it sends the named chain (none for "")
// with SNI serverName to addr and returns the HTTP status, or the error
// that ended the handshake or the request.
func (p *explainPKI) realGet(addr, serverName, path, client string) (int, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: p.root.Pool()}
	if serverName != "localhost" {
		cfg.InsecureSkipVerify = true //nolint:gosec // a passed-through backend's certificate is not under test
	}
	if client != "" {
		cert := tls.Certificate{PrivateKey: p.keys[client].Key}
		for _, c := range p.leaves[client] {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	// the URL names the server (Host and SNI agree, as Caddy's strict
	// SNI-Host check wants); the dial goes to addr
	tr := &http.Transport{TLSClientConfig: cfg, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + serverName + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// runExplain runs `caddy trustline explain` with args, in JSON, and
// returns the report and the exit status.
func runExplain(t *testing.T, c *bench.Caddy, args ...string) (*explain.Report, int) {
	t.Helper()
	out, err := c.Command(t, append([]string{"trustline", "explain", "--format", "json"}, args...)...)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("explain %v: %v\n%s", args, err, out)
	}
	start := strings.Index(out, "{\n")
	if start < 0 {
		t.Fatalf("explain %v exited %d without a report:\n%s", args, code, out)
	}
	var rep explain.Report
	if err := json.NewDecoder(strings.NewReader(out[start:])).Decode(&rep); err != nil {
		t.Fatalf("explain %v: %v\n%s", args, err, out)
	}
	return &rep, code
}

// TestExplainUndeterminedExitsOne: a verdict explain cannot reach
// (caddy-l4's proxy after TLS ends at layer 4) exits 1, as documented,
// through the real binary's command, not 0 as an admitted client does.
func TestExplainUndeterminedExitsOne(t *testing.T) {
	c := bench.New(t)
	file := filepath.Join(c.Dir, "Caddyfile")
	l4 := bench.FreeAddr(t)
	caddyfile := fmt.Sprintf(`{
	admin off
	layer4 {
		%s {
			route {
				tls
				proxy 127.0.0.1:9
			}
		}
	}
}
`, l4)
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, code := runExplain(t, c, "--config", file, "--adapter", "caddyfile", "--server-name", "localhost", "--listen", ":"+bench.Port(l4))
	if rep.Verdict.Outcome != explain.OutcomeUndetermined || code != 1 {
		t.Errorf("verdict %+v, exit %d; want undetermined, exit 1", rep.Verdict, code)
	}
}

// TestExplainAgreesWithRealClients is the proof of `caddy trustline
// explain`: for each case a real TLS client's outcome (handshake refused,
// 403, 200) and explain's verdict agree, with the reason class the
// refusal's log line carries, both offline (--config, the same Caddyfile
// provisioned in the command's process) and live (--address, the running
// instance's admin API); and --upstream dials the backends as the
// transport does.
func TestExplainAgreesWithRealClients(t *testing.T) {
	p := newExplainPKI(t)
	passBackend := explainBackend(t, p.inter.Issue(t, testpki.CN("db.example.com"), testpki.DNS("db.example.com"), testpki.ServerOnly()).TLS(), nil)
	backendCert, err := tls.LoadX509KeyPair(p.backendCert, p.backendKey)
	if err != nil {
		t.Fatal(err)
	}
	trusted := explainBackend(t, backendCert, p.proxyCA.Pool())
	refusing := explainBackend(t, backendCert, p.strangerCA.Pool())
	untrusted := explainBackend(t, p.strangerCA.Issue(t, testpki.CN("impostor"), testpki.IP("127.0.0.1"), testpki.ServerOnly()).TLS(), nil)

	bundle, jks, spiffe, builtin, front, l4 := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	l4tls := bench.FreeAddr(t) // caddy-l4's own tls handler, in place of terminate_tls
	l4Backend, l4Headers := proxyEchoBackend(t)
	mtls := func(backend string) string {
		return fmt.Sprintf(`reverse_proxy https://%s {
			transport mtls {
				client_identity pem %s %s
				trust_pool file %s
			}
		}`, backend, p.proxyCert, p.proxyKey, p.backendCA)
	}
	// a layer-4 listener that ends TLS with terminating (the suite's
	// terminate_tls or caddy-l4's tls), then passes the identity on in
	// PROXY v2 TLVs
	l4Listener := func(addr, terminating string) string {
		return fmt.Sprintf(`127.0.0.1:%s {
			route {
				%s {
					connection_policy {
						client_auth {
							verifier live_trust bundle %s
							verifier peer spiffe://example.org/ops/*
						}
					}
				}
				passthrough %s {
					proxy_protocol v2
					proxy_protocol_identity
				}
			}
		}`, bench.Port(addr), terminating, p.rootFile, l4Backend)
	}
	caddyfile := fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	layer4 {
		%[16]s
		%[17]s
	}
}
https://localhost:%[1]s {
	tls %[6]s %[7]s {
		client_auth {
			verifier live_trust bundle %[8]s
			verifier peer {
				crl %[9]s
			}
		}
	}
	passthrough {
		db.example.com %[10]s
	}
	route /admin* {
		peer_authorize spiffe://example.org/ops/*
		respond "admin"
	}
	respond "in"
}
https://localhost:%[2]s {
	tls %[6]s %[7]s {
		client_auth {
			verifier live_trust truststore %[11]s {
				password changeit
			}
		}
	}
	respond "in"
}
https://localhost:%[3]s {
	tls %[6]s %[7]s {
		client_auth {
			verifier live_trust %[12]s
		}
	}
	respond "in"
}
https://localhost:%[4]s {
	tls %[6]s %[7]s {
		client_auth {
			mode require_and_verify
			trust_pool file %[8]s
			verifier peer {
				crl %[9]s
			}
		}
	}
	respond "in"
}
http://127.0.0.1:%[5]s {
	handle /trusted {
		%[13]s
	}
	handle /refuses {
		%[14]s
	}
	handle /untrusted {
		%[15]s
	}
}
`, bench.Port(bundle), bench.Port(jks), bench.Port(spiffe), bench.Port(builtin), bench.Port(front),
		p.srvCert, p.srvKey, p.rootFile, p.crl, passBackend, p.jks, p.bundles,
		mtls(trusted), mtls(refusing), mtls(untrusted), l4Listener(l4, "terminate_tls"), l4Listener(l4tls, "tls"))
	c := bench.Start(t, caddyfile)
	file := filepath.Join(c.Dir, "Caddyfile")

	cases := []struct {
		name       string
		addr       string
		serverName string
		path       string
		client     string
		status     int    // the real client's: 0 when the handshake is refused
		outcome    string // explain's
		reason     string // explain's, and the real refusal's log line's
		logged     bool   // the refusal is logged by the suite, with its reason
		l4         bool   // a layer-4 route: the real client's handshake and an echo, 200 when it echoes
		spiffeTLV  string // the SPIFFE ID TLV the backend gets in its PROXY v2 header, and explain shows
	}{
		{"admitted by bundle", bundle, "localhost", "/", "alice", 200, explain.OutcomeAdmitted, "", false, false, ""},
		{"admitted by JKS truststore", jks, "localhost", "/", "alice", 200, explain.OutcomeAdmitted, "", false, false, ""},
		{"admitted by SPIFFE bundle", spiffe, "localhost", "/", "svid", 200, explain.OutcomeAdmitted, "", false, false, ""},
		{"no certificate", bundle, "localhost", "/", "", 0, explain.OutcomeRefusedHandshake, "no_certificate", false, false, ""},
		{"unknown issuer", bundle, "localhost", "/", "stranger", 0, explain.OutcomeRefusedHandshake, "unknown_authority", true, false, ""},
		{"missing intermediate", bundle, "localhost", "/", "alice-alone", 0, explain.OutcomeRefusedHandshake, "unknown_authority", true, false, ""},
		{"expired", bundle, "localhost", "/", "expired", 0, explain.OutcomeRefusedHandshake, "expired", true, false, ""},
		{"no clientAuth usage", bundle, "localhost", "/", "serveronly", 0, explain.OutcomeRefusedHandshake, "bad_usage", true, false, ""},
		{"SVID under another domain's authority", spiffe, "localhost", "/", "partner-minted", 0, explain.OutcomeRefusedHandshake, "trust_domain", true, false, ""},
		{"revoked under live_trust", bundle, "localhost", "/", "gone", 0, explain.OutcomeRefusedHandshake, "revoked", true, false, ""},
		{"revoked under Caddy's trust_pool", builtin, "localhost", "/", "gone", 0, explain.OutcomeRefusedHandshake, "revoked", true, false, ""},
		{"403 by peer_authorize", bundle, "localhost", "/admin", "bob", 403, explain.OutcomeRefusedHTTP, "not_allowed", true, false, ""},
		{"admitted by peer_authorize", bundle, "localhost", "/admin", "alice", 200, explain.OutcomeAdmitted, "", false, false, ""},
		{"passthrough name", bundle, "db.example.com", "/", "bob", 200, explain.OutcomePassthrough, "", false, false, ""},
		{"admitted at layer 4, PROXY v2 TLVs", l4, "localhost", "/", "alice", 200, explain.OutcomeAdmitted, "", false, true, "spiffe://example.org/ops/alice"},
		{"refused by peer at layer 4", l4, "localhost", "/", "bob", 0, explain.OutcomeRefusedHandshake, "not_allowed", true, true, ""},
		{"unknown CA refused by live_trust at layer 4", l4, "localhost", "/", "stranger", 0, explain.OutcomeRefusedHandshake, "unknown_authority", true, true, ""},
		{"admitted under caddy-l4's tls, PROXY v2 TLVs", l4tls, "localhost", "/", "alice", 200, explain.OutcomeAdmitted, "", false, true, "spiffe://example.org/ops/alice"},
		{"refused by peer under caddy-l4's tls", l4tls, "localhost", "/", "bob", 0, explain.OutcomeRefusedHandshake, "not_allowed", true, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			realClient := p.realGet
			if tc.l4 {
				realClient = p.realEcho
			}
			status, err := realClient("127.0.0.1:"+bench.Port(tc.addr), tc.serverName, tc.path, tc.client)
			if status != tc.status {
				t.Fatalf("the real client: status %d (%v), want %d", status, err, tc.status)
			}
			if tc.logged {
				c.WaitLog(t, `"reason":"`+tc.reason+`"`, 5*time.Second)
			}
			args := []string{"--server-name", tc.serverName, "--listen", ":" + bench.Port(tc.addr), "--path", tc.path}
			if f := p.chainFile(t, tc.client); f != "" {
				args = append(args, "--cert", f)
			}
			wantCode := map[string]int{explain.OutcomeRefusedHandshake: 2, explain.OutcomeRefusedHTTP: 2}[tc.outcome]
			counted := verdictLines(c.Metrics(t))
			if counted == "" {
				t.Fatal("no trustline_client_verdicts_total series on /metrics: the check below would prove nothing")
			}
			for _, mode := range [][]string{{"--config", file, "--adapter", "caddyfile"}, {"--address", c.Admin}} {
				rep, code := runExplain(t, c, append(mode, args...)...)
				v := rep.Verdict
				if v.Outcome != tc.outcome || v.Reason != tc.reason || code != wantCode {
					t.Errorf("%s: verdict %+v, exit %d; want %s %q, exit %d", mode[0], v, code, tc.outcome, tc.reason, wantCode)
				}
				if tc.status == 403 && v.Status != 403 {
					t.Errorf("%s: status %d, want 403", mode[0], v.Status)
				}
				if tc.spiffeTLV != "" && !reportHas(rep, "TLV 0xE0 (SPIFFE ID)", tc.spiffeTLV) {
					t.Errorf("%s: the report lacks the SPIFFE ID TLV %s: %+v", mode[0], tc.spiffeTLV, rep.Steps)
				}
			}
			if tc.spiffeTLV != "" {
				// the real backend got the same TLV in its PROXY v2 header
				select {
				case h := <-l4Headers:
					if got := tlvValue(h, 0xE0); got != tc.spiffeTLV {
						t.Errorf("the backend's PROXY v2 header carries SPIFFE ID %q, want %q", got, tc.spiffeTLV)
					}
				case <-time.After(5 * time.Second):
					t.Error("the backend got no PROXY v2 header")
				}
			}
			// explaining a client is not a handshake: no verdict counted
			if after := verdictLines(c.Metrics(t)); after != counted {
				t.Errorf("explain moved trustline_client_verdicts_total:\n%s\nthen\n%s", counted, after)
			}
		})
	}

	t.Run("topology page", func(t *testing.T) {
		status, page := c.AdminGet(t, "/trustline/topology?format=html")
		want := "caddy trustline explain --address localhost:2019 --server-name localhost --listen :" + bench.Port(bundle) + " --cert client.pem"
		if status != 200 || !strings.Contains(page, want) {
			t.Errorf("the topology page (%d) lacks the command line %q", status, want)
		}
	})

	t.Run("admin API", func(t *testing.T) {
		chain := string(testpki.CertsPEM(p.leaves["alice"]...))
		for _, tc := range []struct {
			name, method string
			header       http.Header
			body         string
			status       int
			want         string
		}{
			{"a private key", "POST", nil, fmt.Sprintf(`{"server_name":"localhost","chain":%q}`, chain+string(p.keys["alice"].KeyPEM())), 400, "never a key"},
			{"too large", "POST", nil, `{"server_name":"localhost","chain":"` + strings.Repeat("A", explain.MaxBodyBytes) + `"}`, 413, "larger than"},
			{"GET", "GET", nil, "", 405, "use POST"},
			{"another origin", "POST", http.Header{"Origin": {"http://evil.example"}}, `{"server_name":"localhost"}`, 403, "origin"},
			{"no such listener", "POST", nil, `{"server_name":"localhost","listen":":1"}`, 422, "no listener on :1"},
			{"not a configured upstream", "POST", nil, `{"upstream":"192.0.2.1:443"}`, 422, "explain dials only the config's own upstreams"},
		} {
			status, body, err := c.AdminDo(tc.method, "/trustline/explain", tc.header, []byte(tc.body))
			if err != nil || status != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("%s: %d %s %v; want %d %q", tc.name, status, body, err, tc.status, tc.want)
			}
		}
	})

	outbound := []struct {
		name    string
		path    string
		backend string
		status  int
		outcome string
		reason  string
	}{
		{"backend trusted", "/trusted", trusted, 200, explain.OutcomeAdmitted, ""},
		{"backend refuses our certificate", "/refuses", refusing, 502, explain.OutcomeRefusedHandshake, "bad_certificate"},
		{"backend's certificate untrusted", "/untrusted", untrusted, 502, explain.OutcomeRefusedHandshake, "unknown_authority"},
	}
	for _, tc := range outbound {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get("http://127.0.0.1:" + bench.Port(front) + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("the real request: %d, want %d", resp.StatusCode, tc.status)
			}
			wantCode := map[string]int{explain.OutcomeRefusedHandshake: 2}[tc.outcome]
			counted := seriesLines(c.Metrics(t), "trustline_upstream_handshake_failures_total")
			if tc.reason != "" && !strings.Contains(counted, tc.backend) {
				t.Fatalf("the real request's failure is not on /metrics: the check below would prove nothing\n%s", counted)
			}
			for _, mode := range [][]string{{"--config", file, "--adapter", "caddyfile"}, {"--address", c.Admin}} {
				rep, code := runExplain(t, c, append(mode, "--upstream", tc.backend)...)
				v := rep.Verdict
				if v.Outcome != tc.outcome || v.Reason != tc.reason || code != wantCode {
					t.Errorf("%s: verdict %+v, exit %d; want %s %q, exit %d", mode[0], v, code, tc.outcome, tc.reason, wantCode)
				}
			}
			// an operator's probe is no traffic: the running instance
			// neither counts nor logs its failure
			if after := seriesLines(c.Metrics(t), "trustline_upstream_handshake_failures_total"); after != counted {
				t.Errorf("explain --upstream moved trustline_upstream_handshake_failures_total:\n%s\nthen\n%s", counted, after)
			}
		})
	}
}

// realEcho is a real TLS client of a layer-4 route: it sends the named
// chain with SNI serverName to addr, writes a line and reads it back
// (the backend echoes); 200 when it came back, else 0 and the error (a
// TLS 1.3 server's refusal of the certificate arrives on the read).
func (p *explainPKI) realEcho(addr, serverName, _, client string) (int, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: p.root.Pool()}
	if client != "" {
		cert := tls.Certificate{PrivateKey: p.keys[client].Key}
		for _, c := range p.leaves[client] {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		return 0, err
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(conn, got); err != nil {
		return 0, err
	}
	if string(got) != "ping\n" {
		return 0, fmt.Errorf("echo %q", got)
	}
	return 200, nil
}

// proxyEchoBackend is a plain-TCP backend behind a PROXY v2 header: it
// hands each connection's header to the channel and echoes the rest.
func proxyEchoBackend(t *testing.T) (string, <-chan *proxyproto.Header) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	headers := make(chan *proxyproto.Header, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				h, err := proxyproto.Read(br)
				if err != nil {
					return
				}
				headers <- h
				_, _ = io.Copy(conn, br)
			}()
		}
	}()
	return ln.Addr().String(), headers
}

// tlvValue is the value of the TLV of type typ in h ("" when none).
func tlvValue(h *proxyproto.Header, typ proxyproto.PP2Type) string {
	tlvs, _ := h.TLVs()
	for _, tlv := range tlvs {
		if tlv.Type == typ {
			return string(tlv.Value)
		}
	}
	return ""
}

// reportHas reports whether a step of rep has a check name with value.
func reportHas(rep *explain.Report, name, value string) bool {
	for _, s := range rep.Steps {
		for _, c := range s.Checks {
			if c.Name == name && c.Have == value {
				return true
			}
		}
	}
	return false
}

// verdictLines are the trustline_client_verdicts_total series of a
// /metrics page.
func verdictLines(metrics string) string {
	return seriesLines(metrics, "trustline_client_verdicts_total")
}

// seriesLines are the series of the metric name on a /metrics page.
func seriesLines(metrics, name string) string {
	var out []string
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, name+"{") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestExplainLiveLayer4UsesTheHandlerInForce: live, explain answers with
// the terminate_tls handler the running config provisioned, not with a
// copy provisioned from its JSON now. Caddy's own `trust_pool file` is
// read once, at load: after the file is replaced without a reload, the
// running handler still admits the clients of the CA it read, and so
// must explain.
func TestExplainLiveLayer4UsesTheHandlerInForce(t *testing.T) {
	p := newExplainPKI(t)
	backend, _ := proxyEchoBackend(t)
	l4 := bench.FreeAddr(t)
	pool := testpki.WriteFile(t, p.dir, "l4-clients.pem", p.root.CertPEM())
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	layer4 {
		127.0.0.1:%s {
			route {
				terminate_tls {
					connection_policy {
						client_auth {
							mode require_and_verify
							trust_pool file %s
						}
					}
				}
				passthrough %s {
					proxy_protocol v2
				}
			}
		}
	}
}
https://localhost {
	bind 127.0.0.1
	tls %s %s
	respond "site"
}
`, bench.Port(l4), pool, backend, p.srvCert, p.srvKey))
	addr := "127.0.0.1:" + bench.Port(l4)
	if status, err := p.realEcho(addr, "localhost", "", "alice"); status != 200 {
		t.Fatalf("before the file changes, the real client: %v", err)
	}
	// another CA's certificate in its place, no reload
	testpki.WriteFile(t, p.dir, "l4-clients.pem", p.otherInter.CertPEM())
	if status, err := p.realEcho(addr, "localhost", "", "alice"); status != 200 {
		t.Fatalf("after the file changed without a reload, the running handler refused the real client: %v", err)
	}
	rep, code := runExplain(t, c, "--address", c.Admin, "--server-name", "localhost", "--listen", ":"+bench.Port(l4), "--cert", p.chainFile(t, "alice"))
	if rep.Verdict.Outcome != explain.OutcomeAdmitted || code != 0 {
		t.Errorf("live explain: %+v (exit %d); the running handler admits the client", rep.Verdict, code)
	}
}
