package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// peerPKI is the PKI of the peer tests: a trusted root with an issuing
// intermediate, a server certificate, and client certificates written to
// files for curl and openssl.
type peerPKI struct {
	dir              string
	root, inter      *testpki.CA
	rootFile         string
	srvCert, srvKey  string
	clients          map[string][2]string // name -> cert, key files
	leaves           map[string]*testpki.Leaf
	foreignRootFiles string
}

func newPeerPKI(t testing.TB) *peerPKI {
	p := &peerPKI{dir: t.TempDir(), clients: map[string][2]string{}, leaves: map[string]*testpki.Leaf{}}
	p.root = testpki.NewCA(t, "Peer Root", testpki.Org("Example"))
	p.inter = p.root.NewIntermediate(t, "Peer Issuing CA", testpki.Org("Example"))
	p.rootFile = testpki.WriteFile(t, p.dir, "root.pem", p.root.CertPEM())
	srv := p.inter.Issue(t, testpki.CN("localhost"), testpki.DNS("localhost"), testpki.IP("127.0.0.1"), testpki.ServerOnly())
	p.srvCert, p.srvKey = srv.WriteFiles(t, p.dir, "server")
	foreign := testpki.NewCA(t, "Peer Root", testpki.Org("Example")) // same names, other key
	for name, leaf := range map[string]*testpki.Leaf{
		"alice":      p.inter.Issue(t, testpki.CN("alice"), testpki.URI("spiffe://example.org/ops/alice"), testpki.ClientOnly()),
		"bob":        p.inter.Issue(t, testpki.CN("bob"), testpki.URI("spiffe://example.org/dev/bob"), testpki.ClientOnly()),
		"mallory":    p.inter.Issue(t, testpki.CN("alice"), testpki.URI("spiffe://other.org/ops/alice"), testpki.ClientOnly()),
		"foreign":    foreign.Issue(t, testpki.CN("alice"), testpki.URI("spiffe://example.org/ops/alice"), testpki.ClientOnly()),
		"expired":    p.inter.Issue(t, testpki.CN("alice"), testpki.URI("spiffe://example.org/ops/alice"), testpki.ClientOnly(), testpki.Expired()),
		"twouris":    p.inter.Issue(t, testpki.CN("two"), testpki.URI("spiffe://example.org/ops/alice", "spiffe://example.org/ops/root"), testpki.ClientOnly()),
		"https":      p.inter.Issue(t, testpki.CN("https"), testpki.URI("https://example.org/ops/alice"), testpki.ClientOnly()),
		"serveronly": p.inter.Issue(t, testpki.CN("alice"), testpki.URI("spiffe://example.org/ops/alice"), testpki.ServerOnly()),
		"db":         p.inter.Issue(t, testpki.CN("db"), testpki.URI("spiffe://example.org/db/reporting"), testpki.ClientOnly()),
	} {
		c, k := leaf.WriteFiles(t, p.dir, name)
		p.clients[name] = [2]string{c, k}
		p.leaves[name] = leaf
	}
	return p
}

// curl runs curl against url with the named client certificate ("" for
// none) and extra args; it returns the body, stderr and exit code.
func (p *peerPKI) curl(t *testing.T, client, url string, args ...string) (string, string, int) {
	t.Helper()
	a := []string{"--cacert", p.rootFile}
	if client != "" {
		a = append(a, "--cert", p.clients[client][0], "--key", p.clients[client][1])
	}
	return bench.Curl(t, append(append(a, args...), url)...)
}

// headerEcho is the backend: it answers with the request headers it got,
// as JSON, and counts requests.
type headerEcho struct {
	*httptest.Server
	hits atomic.Int64
}

func newHeaderEcho(t *testing.T) *headerEcho {
	e := &headerEcho{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		_ = json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(e.Close)
	return e
}

func decodeHeaders(t *testing.T, body string) http.Header {
	t.Helper()
	var h http.Header
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("backend answer %q: %v", body, err)
	}
	return h
}

// forgedHeaderArgs are curl -H arguments forging the identity family in
// every spelling: case variants, duplicates, comma-joined values and
// underscores.
var forgedHeaderArgs = []string{
	"-H", "Client-Cert: :Zm9yZ2Vk:",
	"-H", "client-cert: :Zm9yZ2Vk:, :Zm9yZ2Vk:",
	"-H", "CLIENT-CERT-CHAIN: :Zm9yZ2Vk:",
	"-H", "X-Forwarded-Client-Cert: By=spiffe://evil;URI=spiffe://example.org/admin",
	"-H", "x-forwarded-client-cert: URI=spiffe://example.org/admin,URI=spiffe://example.org/root",
	"-H", "X_Forwarded_Client_Cert: URI=spiffe://example.org/admin",
	"-H", "X-Spiffe-Id: spiffe://example.org/admin",
	"-H", "x-spiffe-id: spiffe://example.org/root",
	"-H", "X-Legacy-Verify: SUCCESS",
}

// assertNoForgery fails if any forged value reached the backend.
func assertNoForgery(t *testing.T, h http.Header) {
	t.Helper()
	for name, vals := range h {
		for _, v := range vals {
			if strings.Contains(v, "Zm9yZ2Vk") || strings.Contains(v, "admin") || strings.Contains(v, "spiffe://evil") ||
				strings.Contains(v, "example.org/root") || v == "SUCCESS" {
				t.Errorf("forged header reached the backend: %s: %s", name, v)
			}
		}
		if n := strings.ToLower(strings.ReplaceAll(name, "_", "-")); n == "x-forwarded-client-cert" || n == "client-cert" || n == "x-spiffe-id" {
			if len(vals) != 1 {
				t.Errorf("%s reached the backend %d times: %q", name, len(vals), vals)
			}
		}
	}
}

// TestPeerHTTP runs the HTTP side against the real binary with curl and
// openssl: authorization by SPIFFE ID (200/403), refusals at the
// handshake, forwarding without spoofing over HTTP/1.1 and HTTP/2, an
// unverified certificate under `mode request`, placeholders, the access
// log, and the handshake verifier.
func TestPeerHTTP(t *testing.T) {
	p := newPeerPKI(t)
	backend := newHeaderEcho(t)
	authz, request, verifier := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	# crypto/tls's handshake refusals (expired, unknown CA, wrong key
	# usage) are logged by Caddy at debug level, as http.stdlib
	debug
}

# authorization and forwarding, after a verified handshake
https://localhost:%[1]s {
	tls %[4]s %[5]s {
		client_auth {
			trust_pool file %[6]s
		}
	}
	log
	peer_authorize spiffe://example.org/ops/*
	forward_peer_identity {
		client_cert
		client_cert_chain
		xfcc {
			by spiffe://example.org/edge
		}
		header X-Spiffe-Id {peer.spiffe_id}
		strip X-Legacy-Verify
	}
	@whoami path /whoami
	respond @whoami "{peer.verified} {peer.spiffe_id} {peer.trust_domain} {peer.subject.cn} {peer.issuer.cn}"
	reverse_proxy %[7]s
}

# client_auth mode request: certificates are asked for, never verified
https://localhost:%[2]s {
	tls %[4]s %[5]s {
		client_auth {
			mode request
		}
	}
	forward_peer_identity {
		client_cert
		header X-Spiffe-Id {peer.spiffe_id}
		strip X-Legacy-Verify
	}
	@ops peer spiffe://example.org/ops/*
	respond @ops "matched"
	@whoami path /whoami
	respond @whoami "verified={peer.verified} presented={peer.presented} id={peer.spiffe_id}"
	reverse_proxy %[7]s
}

# the handshake verifier
https://localhost:%[3]s {
	tls %[4]s %[5]s {
		client_auth {
			trust_pool file %[6]s
			verifier peer spiffe://example.org/ops/*
		}
	}
	peer_identity
	respond "hello {peer.spiffe_id}"
}
`, bench.Port(authz), bench.Port(request), bench.Port(verifier), p.srvCert, p.srvKey, p.rootFile, backend.Listener.Addr().String()))

	authzURL := "https://localhost:" + bench.Port(authz)

	t.Run("allowed SPIFFE ID", func(t *testing.T) {
		body, stderr, code := p.curl(t, "alice", authzURL+"/whoami")
		if code != 0 || body != "true spiffe://example.org/ops/alice example.org alice Peer Issuing CA" {
			t.Fatalf("exit %d, body %q, %s", code, body, stderr)
		}
	})
	for _, name := range []string{"bob", "mallory", "twouris", "https"} {
		t.Run("403 for "+name, func(t *testing.T) {
			before := backend.hits.Load()
			body, stderr, code := p.curl(t, name, authzURL+"/", "-o", "/dev/null", "-w", "%{http_code}")
			if code != 0 || body != "403" {
				t.Fatalf("exit %d, status %q, %s", code, body, stderr)
			}
			if backend.hits.Load() != before {
				t.Fatal("a denied request reached the backend")
			}
		})
	}
	t.Run("denials logged with identity and rule", func(t *testing.T) {
		c.WaitLog(t, `"spiffe_id":"spiffe://example.org/dev/bob"`, 5*time.Second)
		log := c.Log()
		for _, want := range []string{
			`"msg":"denied","verified":true,"spiffe_id":"spiffe://example.org/dev/bob"`,
			`"rule":"spiffe_id","patterns":"[spiffe://example.org/ops/*]","value":"spiffe://example.org/dev/bob"`,
			`"value":"spiffe://other.org/ops/alice"`,
			// never matched as a SPIFFE identity, and why
			`"spiffe_id_rejected":"not a SPIFFE ID: certificate contains more than one URI SAN"`,
			`"spiffe_id_rejected":"not a SPIFFE ID: scheme is missing or invalid"`,
		} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %s", want)
			}
		}
	})
	for name, reason := range map[string]string{
		"foreign":    "certificate signed by unknown authority",
		"expired":    "certificate has expired",
		"serveronly": "certificate specifies an incompatible key usage",
	} {
		t.Run("refused at handshake: "+name, func(t *testing.T) {
			before := backend.hits.Load()
			body, stderr, code := p.curl(t, name, authzURL+"/")
			if code == 0 || body != "" {
				t.Fatalf("exit %d, body %q: %s", code, body, stderr)
			}
			if backend.hits.Load() != before {
				t.Fatal("reached the backend")
			}
			c.WaitLog(t, reason, 5*time.Second)
		})
	}
	t.Run("no certificate refused", func(t *testing.T) {
		_, stderr, code := p.curl(t, "", authzURL+"/")
		if code == 0 {
			t.Fatalf("a client without a certificate got through: %s", stderr)
		}
	})

	for _, proto := range []string{"--http1.1", "--http2"} {
		t.Run("forwarding without spoofing "+proto, func(t *testing.T) {
			body, stderr, code := p.curl(t, "alice", authzURL+"/", append([]string{proto}, forgedHeaderArgs...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			h := decodeHeaders(t, body)
			assertNoForgery(t, h)
			alice := p.leaves["alice"]
			if got, want := h.Get("Client-Cert"), ":"+base64.StdEncoding.EncodeToString(alice.Cert.Raw)+":"; got != want {
				t.Errorf("Client-Cert %q, want the verified leaf", got)
			}
			wantChain := ":" + base64.StdEncoding.EncodeToString(p.inter.Cert.Raw) + ":, :" + base64.StdEncoding.EncodeToString(p.root.Cert.Raw) + ":"
			if got := h.Get("Client-Cert-Chain"); got != wantChain {
				t.Errorf("Client-Cert-Chain %q, want the verified chain", got)
			}
			xfcc := h.Get("X-Forwarded-Client-Cert")
			if !strings.HasPrefix(xfcc, "By=spiffe://example.org/edge;Hash=") || !strings.Contains(xfcc, `;Subject="CN=alice";URI=spiffe://example.org/ops/alice`) {
				t.Errorf("XFCC %q", xfcc)
			}
			if got := h.Values("X-Spiffe-Id"); len(got) != 1 || got[0] != "spiffe://example.org/ops/alice" {
				t.Errorf("X-Spiffe-Id %q", got)
			}
		})
	}

	requestURL := "https://localhost:" + bench.Port(request)
	t.Run("mode request: unverified certificate has no identity", func(t *testing.T) {
		for _, client := range []string{"alice", "foreign", "serveronly", ""} {
			body, stderr, code := p.curl(t, client, requestURL+"/whoami")
			presented := client != ""
			if want := fmt.Sprintf("verified=false presented=%v id=", presented); code != 0 || body != want {
				t.Fatalf("%s: exit %d, body %q (want %q), %s", client, code, body, want, stderr)
			}
			body, _, _ = p.curl(t, client, requestURL+"/", forgedHeaderArgs...)
			if body == "matched" {
				t.Fatalf("%s: an unverified certificate matched the peer matcher", client)
			}
			h := decodeHeaders(t, body)
			assertNoForgery(t, h)
			for _, name := range []string{"Client-Cert", "X-Spiffe-Id", "X-Forwarded-Client-Cert"} {
				if v := h.Values(name); len(v) != 0 {
					t.Errorf("%s: %s set without a verified certificate: %q", client, name, v)
				}
			}
		}
	})

	t.Run("identity in the access log", func(t *testing.T) {
		if _, _, code := p.curl(t, "alice", authzURL+"/logged"); code != 0 {
			t.Fatal("request failed")
		}
		c.WaitLog(t, `"uri":"/logged"`, 5*time.Second)
		for _, line := range strings.Split(c.Log(), "\n") {
			if strings.Contains(line, `"uri":"/logged"`) && strings.Contains(line, "http.log.access") {
				if !strings.Contains(line, `"peer":{"verified":true,"spiffe_id":"spiffe://example.org/ops/alice","subject":"CN=alice","issuer":"CN=Peer Issuing CA,O=Example"`) {
					t.Fatalf("access log line lacks the identity: %s", line)
				}
				return
			}
		}
		t.Fatal("no access log line for /logged")
	})

	verifierURL := "https://localhost:" + bench.Port(verifier)
	t.Run("handshake verifier", func(t *testing.T) {
		body, stderr, code := p.curl(t, "alice", verifierURL+"/")
		if code != 0 || body != "hello spiffe://example.org/ops/alice" {
			t.Fatalf("alice: exit %d, %q, %s", code, body, stderr)
		}
		for _, name := range []string{"bob", "mallory", "twouris"} {
			body, stderr, code := p.curl(t, name, verifierURL+"/")
			if code == 0 || body != "" {
				t.Fatalf("%s: exit %d, body %q, %s", name, code, body, stderr)
			}
		}
		// openssl s_client: the server's alert ends the connection before
		// any HTTP byte is exchanged
		out := opensslClient(t, p, "bob", verifier)
		if !strings.Contains(out, "alert bad certificate") && !strings.Contains(out, "alert number 42") {
			t.Fatalf("openssl s_client did not see a bad_certificate alert:\n%s", out)
		}
		c.WaitLog(t, `"msg":"refused TLS handshake: client identity not allowed"`, 5*time.Second)
		if !strings.Contains(c.Log(), `"rule":"spiffe_id","patterns":"[spiffe://example.org/ops/*]","value":"spiffe://example.org/dev/bob"`) {
			t.Error("the refusal log lacks the rule")
		}
	})
}

// opensslClient connects with openssl s_client, sends nothing, and
// returns its output once the server has closed the connection.
func opensslClient(t *testing.T, p *peerPKI, client, addr string) string {
	t.Helper()
	bin := bench.Need(t, "openssl")
	// -cert sends only the first certificate of its file: the
	// intermediate goes with -cert_chain
	interFile := testpki.WriteFile(t, t.TempDir(), "inter.pem", p.inter.CertPEM())
	cmd := exec.Command(bin, "s_client", "-connect", addr, "-servername", "localhost",
		"-CAfile", p.rootFile, "-cert", p.clients[client][0], "-key", p.clients[client][1],
		"-cert_chain", interFile, "-ign_eof")
	cmd.Stdin = strings.NewReader("")
	done := make(chan struct{})
	var out []byte
	go func() {
		out, _ = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("openssl s_client did not finish:\n%s", out)
	}
	return string(out)
}

// echoServer is a raw TCP service answering "<name>:<line>" to each line.
func echoServer(t *testing.T, name string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				s := bufio.NewScanner(conn)
				for s.Scan() {
					if _, err := fmt.Fprintf(conn, "%s:%s\n", name, s.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestPeerLayer4 routes a raw TCP service by the client's identity after
// caddy-l4's tls handler: the db identity reaches the db echo server, the
// ops identity the ops one, others are dropped, and the handshake verifier
// refuses at layer 4 too.
func TestPeerLayer4(t *testing.T) {
	p := newPeerPKI(t)
	dbEcho, opsEcho := echoServer(t, "db"), echoServer(t, "ops")
	l4, l4v, site := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	layer4 {
		%[1]s {
			route {
				tls {
					connection_policy {
						client_auth {
							trust_pool file %[4]s
						}
					}
				}
				subroute {
					@db peer spiffe://example.org/db/*
					@ops peer {
						trust_domain example.org
						spiffe_id spiffe://example.org/ops/*
					}
					route @db {
						proxy %[5]s
					}
					route @ops {
						proxy %[6]s
					}
				}
			}
		}
		%[2]s {
			route {
				tls {
					connection_policy {
						client_auth {
							trust_pool file %[4]s
							verifier peer spiffe://example.org/db/*
						}
					}
				}
				proxy %[5]s
			}
		}
	}
}

# loads the server certificate into the tls app for the layer-4 tls handler
https://localhost:%[3]s {
	tls %[7]s %[8]s
	respond "site"
}
`, l4, l4v, bench.Port(site), p.rootFile, dbEcho, opsEcho, p.srvCert, p.srvKey))

	talk := func(client, addr string) (string, error) {
		leaf := p.leaves[client]
		cfg := &tls.Config{ServerName: "localhost", RootCAs: p.root.Pool(), Certificates: []tls.Certificate{leaf.TLS()}}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(conn, "ping\n"); err != nil {
			return "", err
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	for _, c := range []struct{ client, want string }{
		{"db", "db:ping"},
		{"alice", "ops:ping"},
		{"bob", ""},
		{"mallory", ""},
		{"twouris", ""},
	} {
		got, err := talk(c.client, l4)
		if got != c.want {
			t.Errorf("%s: got %q (%v), want %q", c.client, got, err, c.want)
		}
	}
	if got, err := talk("foreign", l4); err == nil || got != "" {
		t.Errorf("foreign CA: got %q, %v", got, err)
	}
	// the verifier at layer 4
	if got, err := talk("db", l4v); got != "db:ping" {
		t.Errorf("verifier, db: %q %v", got, err)
	}
	if got, err := talk("alice", l4v); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("verifier, alice: %q %v", got, err)
	}
}

// peerCRL is a DER CRL by ca revoking certs.
func peerCRL(t *testing.T, ca *testpki.CA, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestPeerRevocation: the handshake verifier refuses revoked client
// certificates, from a CRL file (re-read while running) and from a CRL
// distribution point served over HTTP.
func TestPeerRevocation(t *testing.T) {
	p := newPeerPKI(t)
	var dpCRL atomic.Value
	dpCRL.Store(peerCRL(t, p.inter))
	var dpHits atomic.Int64
	crlSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dpHits.Add(1)
		_, _ = w.Write(dpCRL.Load().([]byte))
	}))
	defer crlSrv.Close()
	withDP := func(c *x509.Certificate) { c.CRLDistributionPoints = []string{crlSrv.URL + "/issuing.crl"} }
	for _, name := range []string{"dp-ok", "dp-revoked"} {
		leaf := p.inter.Issue(t, testpki.CN(name), testpki.URI("spiffe://example.org/ops/"+name), testpki.ClientOnly(), withDP)
		c, k := leaf.WriteFiles(t, p.dir, name)
		p.clients[name], p.leaves[name] = [2]string{c, k}, leaf
	}
	crlFile := testpki.WriteFile(t, p.dir, "issuing.crl", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: peerCRL(t, p.inter, p.leaves["bob"].Cert)}))
	files, dps := bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
			verifier peer {
				crl %[6]s
				crl_refresh 1s
			}
		}
	}
	peer_identity
	respond "hello {peer.subject.cn}"
}
https://localhost:%[2]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
			verifier peer spiffe://example.org/ops/* {
				crl_distribution_points
				crl_refresh 1s
			}
		}
	}
	peer_identity
	respond "hello {peer.subject.cn}"
}
`, bench.Port(files), bench.Port(dps), p.srvCert, p.srvKey, p.rootFile, crlFile))

	get := func(client, addr string) (string, int) {
		body, _, code := p.curl(t, client, "https://localhost:"+bench.Port(addr)+"/")
		return body, code
	}
	if body, code := get("alice", files); code != 0 || body != "hello alice" {
		t.Fatalf("alice: exit %d, %q", code, body)
	}
	if body, code := get("bob", files); code == 0 || body != "" {
		t.Fatalf("revoked bob got through: %q", body)
	}
	c.WaitLog(t, "is revoked by the CRL from "+crlFile, 5*time.Second)

	// the CRL file changes while Caddy runs: alice revoked too
	testpki.WriteFile(t, p.dir, "issuing.crl", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: peerCRL(t, p.inter, p.leaves["bob"].Cert, p.leaves["alice"].Cert)}))
	eventually(t, 10*time.Second, "alice refused after her certificate was revoked in the CRL file", func() (bool, string) {
		body, code := get("alice", files)
		return code != 0, fmt.Sprintf("exit %d, %q", code, body)
	})

	// distribution point: fetched once, cached
	for i := 0; i < 3; i++ {
		if body, code := get("dp-ok", dps); code != 0 || body != "hello dp-ok" {
			t.Fatalf("dp-ok: exit %d, %q", code, body)
		}
	}
	if n := dpHits.Load(); n != 1 {
		t.Errorf("the distribution point was fetched %d times for 3 handshakes", n)
	}
	dpCRL.Store(peerCRL(t, p.inter, p.leaves["dp-revoked"].Cert))
	eventually(t, 10*time.Second, "dp-revoked refused after the distribution point's CRL revoked it", func() (bool, string) {
		body, code := get("dp-revoked", dps)
		return code != 0, fmt.Sprintf("exit %d, %q", code, body)
	})
	if body, code := get("dp-ok", dps); code != 0 || body != "hello dp-ok" {
		t.Fatalf("dp-ok after refresh: exit %d, %q", code, body)
	}
}

// BenchmarkPeerRouteOverhead measures a hello-world route with the peer
// matcher and the forwarding handler against the same route without them,
// side by side on one Caddy (every site verifies client certificates), over
// 16 keep-alive HTTP/1.1 connections with a client certificate, in
// interleaved rounds whose order rotates. Two identical bare sites run
// beside it: their ratio (control/plain) shows what the bench itself
// cannot tell apart. It reports requests per second for each and
// peer/plain, the peer route against the mean of the two bare ones (the
// target is >= 0.97).
//
//	go test ./integration/ -run XXX -bench PeerRouteOverhead -benchtime 100000x -count 5
func BenchmarkPeerRouteOverhead(b *testing.B) {
	rps := benchRoutes(b, []benchSite{
		{"plain", `respond "hello"`},
		{"control", `respond "hello"`},
		{"peer", `@ops peer spiffe://example.org/ops/* dns:*.example.org ou:ops
	forward_peer_identity {
		client_cert
		client_cert_chain
		xfcc
		header X-Spiffe-Id {peer.spiffe_id}
	}
	respond @ops "hello"`},
	})
	b.ReportMetric(rps["control"]/rps["plain"], "control/plain")
	b.ReportMetric(2*rps["peer"]/(rps["plain"]+rps["control"]), "peer/plain")
	b.ReportMetric(rps["peer_cpu"]-(rps["plain_cpu"]+rps["control_cpu"])/2, "peer_added_caddy_us/req")
}

// BenchmarkPeerRouteParts splits the overhead measured by
// BenchmarkPeerRouteOverhead: the matcher alone, the forwarding handler
// alone, and for scale Caddy's own pair of a matcher and a header handler
// (remote_ip + request_header) and its simplest handler (vars) on the same
// route. Ratios are to the bare route.
//
//	go test ./integration/ -run XXX -bench PeerRouteParts -benchtime 100000x -count 3
func BenchmarkPeerRouteParts(b *testing.B) {
	rps := benchRoutes(b, []benchSite{
		{"plain", `respond "hello"`},
		{"matcher", `@ops peer spiffe://example.org/ops/* dns:*.example.org ou:ops
	respond @ops "hello"`},
		{"forward", `forward_peer_identity {
		client_cert
		client_cert_chain
		xfcc
		header X-Spiffe-Id {peer.spiffe_id}
	}
	respond "hello"`},
		{"caddy", `@local remote_ip 127.0.0.0/8
	request_header X-Client-Ip {http.request.remote.host}
	respond @local "hello"`},
		{"vars", `vars foo bar
	respond "hello"`},
	})
	for _, name := range []string{"matcher", "forward", "caddy", "vars"} {
		b.ReportMetric(rps[name]/rps["plain"], name+"/plain")
		b.ReportMetric(rps[name+"_cpu"]-rps["plain_cpu"], name+"_added_caddy_us/req")
	}
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times
// (100 on Linux everywhere Go runs).
const clockTicks = 100

// cpuTicks is the user+system CPU time of a process, in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// the fields after the command name, which is in parentheses
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// benchSite is one site of benchRoutes: a name and its directives.
type benchSite struct{ name, body string }

// benchRoutes runs one Caddy with a site per entry (each on its own port,
// each verifying client certificates) and measures each with 16 keep-alive
// HTTP/1.1 clients presenting a client certificate, in b.N requests split
// over interleaved rounds whose order rotates. Every response must be
// "hello". It reports and returns requests per second by site name, and
// Caddy's own CPU time per request by "<name>_cpu" (from /proc, read
// around each run). For a closer look, TL_PROFILE=<file> saves an 8 s CPU
// profile of Caddy taken during the rounds and TL_ALLOCS=<file> its
// allocation profile at the end.
func benchRoutes(b *testing.B, sites []benchSite) map[string]float64 {
	p := newPeerPKI(b)
	var conf strings.Builder
	fmt.Fprintf(&conf, `{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
(mtls) {
	tls %s %s {
		client_auth {
			trust_pool file %s
		}
	}
}
`, p.srvCert, p.srvKey, p.rootFile)
	const conns = 16
	type route struct {
		name  string
		url   string
		hc    *http.Client
		took  time.Duration
		ticks int64 // Caddy's CPU time (user+system, clock ticks) while it ran
	}
	leaf := p.inter.Issue(b, testpki.URI("spiffe://example.org/ops/alice"), testpki.DNS("alice.example.org"), testpki.OU("ops"), testpki.ClientOnly())
	var routes []*route
	for _, s := range sites {
		port := bench.Port(bench.FreeAddr(b))
		fmt.Fprintf(&conf, "https://localhost:%s {\n\timport mtls\n\t%s\n}\n", port, s.body)
		routes = append(routes, &route{
			name: s.name,
			url:  "https://localhost:" + port + "/",
			hc: &http.Client{Transport: &http.Transport{
				TLSClientConfig:     &tls.Config{RootCAs: p.root.Pool(), Certificates: []tls.Certificate{leaf.TLS()}},
				MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
			}},
		})
	}
	cdy := bench.Start(b, conf.String())
	run := func(rt *route, n int) time.Duration {
		start := time.Now()
		var next atomic.Int64
		errs := make(chan error, conns)
		for w := 0; w < conns; w++ {
			go func() {
				for next.Add(1) <= int64(n) {
					resp, err := rt.hc.Get(rt.url)
					if err != nil {
						errs <- err
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(body) != "hello" {
						errs <- fmt.Errorf("%s (%s): %d %q", rt.name, rt.url, resp.StatusCode, body)
						return
					}
				}
				errs <- nil
			}()
		}
		for w := 0; w < conns; w++ {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	for _, rt := range routes {
		run(rt, 2000) // warm-up: handshakes, caches
	}
	if out := os.Getenv("TL_PROFILE"); out != "" { // a CPU profile of Caddy during the rounds
		go func() {
			resp, err := http.Get("http://" + cdy.Admin + "/debug/pprof/profile?seconds=8")
			if err == nil {
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				_ = os.WriteFile(out, data, 0o644)
			}
		}()
	}
	const rounds = 21 // many short interleaved rounds, so that noise from other processes hits every route alike
	per := max(1, b.N/rounds)
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		for i := range routes {
			rt := routes[(r+i)%len(routes)] // rotate who goes first
			t0 := cpuTicks(b, cdy.PID())
			rt.took += run(rt, per)
			rt.ticks += cpuTicks(b, cdy.PID()) - t0
		}
	}
	b.StopTimer()
	if out := os.Getenv("TL_ALLOCS"); out != "" { // Caddy's allocations so far
		if resp, err := http.Get("http://" + cdy.Admin + "/debug/pprof/allocs"); err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_ = os.WriteFile(out, data, 0o644)
		}
	}
	rps := map[string]float64{}
	for _, rt := range routes {
		rps[rt.name] = float64(per*rounds) / rt.took.Seconds()
		b.ReportMetric(rps[rt.name], rt.name+"_req/s")
		// Caddy's own CPU per request: steadier than the rates, which
		// also carry the in-process client's share of the two cores
		cpu := float64(rt.ticks) / clockTicks * 1e6 / float64(per*rounds)
		rps[rt.name+"_cpu"] = cpu
		b.ReportMetric(cpu, rt.name+"_caddy_us/req")
	}
	return rps
}

// TestExampleIdentityForwarding runs examples/identity-forwarding: its
// openssl script, its nginx backend, its Caddyfile, and the curl commands
// of its README.
func TestExampleIdentityForwarding(t *testing.T) {
	bench.Need(t, "openssl")
	ex := bench.RepoPath("examples", "identity-forwarding")
	pki := t.TempDir()
	if out, err := exec.Command("sh", filepath.Join(ex, "make-certs.sh"), pki).CombinedOutput(); err != nil {
		t.Fatalf("make-certs.sh: %v\n%s", err, out)
	}
	backendAddr := bench.FreeAddr(t)
	conf, err := os.ReadFile(filepath.Join(ex, "backend-nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	bench.StartNginx(t, strings.ReplaceAll(string(conf), "127.0.0.1:9000", backendAddr))
	bench.WaitPort(t, backendAddr, 10*time.Second)
	caddyfile, err := os.ReadFile(filepath.Join(ex, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	edge := bench.FreeAddr(t)
	// the example's admin default, made explicit for the bench
	cf := strings.Replace(string(caddyfile), "{$TL_ADMIN:localhost:2019}", "{$TL_ADMIN}", 1)
	c := bench.Start(t, cf, "PKI_DIR="+pki, "EDGE_PORT="+bench.Port(edge), "BACKEND="+backendAddr)

	curl := func(client string, args ...string) (string, string, int) {
		a := []string{"--cacert", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, client+".crt"), "--key", filepath.Join(pki, client+".key")}
		return bench.Curl(t, append(append(a, args...), "https://localhost:"+bench.Port(edge)+"/")...)
	}
	for _, proto := range []string{"--http1.1", "--http2"} {
		body, stderr, code := curl("web", proto,
			"-H", "X-Forwarded-Client-Cert: URI=spiffe://example.org/ns/prod/sa/admin",
			"-H", "x-spiffe-id: spiffe://example.org/ns/prod/sa/admin",
			"-H", "Client-Cert: :Zm9yZ2Vk:")
		if code != 0 {
			t.Fatalf("web %s: exit %d: %s", proto, code, stderr)
		}
		webDER := mustReadCertDER(t, filepath.Join(pki, "web.crt"))
		caDER := mustReadCertDER(t, filepath.Join(pki, "ca.crt"))
		for _, want := range []string{
			"client-cert: :" + base64.StdEncoding.EncodeToString(webDER) + ":\n",
			"client-cert-chain: :" + base64.StdEncoding.EncodeToString(caDER) + ":\n",
			"x-forwarded-client-cert: By=spiffe://example.org/ns/edge/sa/caddy;Hash=",
			`;Subject="CN=web,O=Example";URI=spiffe://example.org/ns/prod/sa/web` + "\n",
			"x-spiffe-id: spiffe://example.org/ns/prod/sa/web\n",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("web %s: the backend's answer lacks %q:\n%s", proto, want, body)
			}
		}
		if strings.Contains(body, "admin") || strings.Contains(body, "Zm9yZ2Vk") {
			t.Errorf("web %s: a forged header reached the backend:\n%s", proto, body)
		}
	}
	if body, _, code := curl("batch", "-o", "/dev/null", "-w", "%{http_code}"); code != 0 || body != "403" {
		t.Fatalf("batch: exit %d, status %q", code, body)
	}
	c.WaitLog(t, `"msg":"denied","verified":true,"spiffe_id":"spiffe://example.org/ns/dev/sa/batch"`, 5*time.Second)
	if body, _, code := curl("partner"); code == 0 || body != "" {
		t.Fatalf("partner: exit %d, body %q", code, body)
	}
	c.WaitLog(t, `"rule":"trust_domain","patterns":"[example.org]","value":"partner.example"`, 5*time.Second)
}

func mustReadCertDER(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	return block.Bytes
}
