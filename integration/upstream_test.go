package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// upPKI is the PKI of the upstream tests: the backends' CA (their server
// certificates), the proxy's CA (its client identities, trusted by the
// backends) and a foreign CA nobody trusts.
type upPKI struct {
	backendCA, proxyCA, foreignCA *testpki.CA
	dir                           string
	serverCert, serverKey         string
	backendCAFile, proxyCAFile    string
}

func newUpPKI(t *testing.T) *upPKI {
	t.Helper()
	p := &upPKI{
		backendCA: testpki.NewCA(t, "backend root"),
		proxyCA:   testpki.NewCA(t, "proxy root"),
		foreignCA: testpki.NewCA(t, "foreign root"),
		dir:       t.TempDir(),
	}
	server := p.backendCA.Issue(t, testpki.CN("backend"), testpki.IP("127.0.0.1"), testpki.ServerOnly())
	p.serverCert, p.serverKey = server.WriteFiles(t, p.dir, "server")
	p.backendCAFile = testpki.WriteFile(t, p.dir, "backend-ca.pem", p.backendCA.CertPEM())
	p.proxyCAFile = testpki.WriteFile(t, p.dir, "proxy-ca.pem", p.proxyCA.CertPEM())
	return p
}

// client issues a client identity from ca and writes it as PEM files.
func (p *upPKI) client(t *testing.T, name string, ca *testpki.CA, opts ...testpki.Option) (leaf *testpki.Leaf, cert, key string) {
	t.Helper()
	leaf = ca.Issue(t, append([]testpki.Option{testpki.CN(name), testpki.ClientOnly()}, opts...)...)
	cert, key = leaf.WriteFiles(t, p.dir, name)
	return leaf, cert, key
}

// upNginx starts nginx requiring a client certificate from the CAs in
// clientCAFile; it answers with the serial of the certificate it got.
func upNginx(t *testing.T, p *upPKI, clientCAFile string) string {
	t.Helper()
	addr := bench.FreeAddr(t)
	bench.StartNginx(t, fmt.Sprintf(`http {
	access_log off;
	default_type text/plain;
	keepalive_requests 1000000;
	server {
		listen %s ssl;
		ssl_certificate %s;
		ssl_certificate_key %s;
		ssl_client_certificate %s;
		ssl_verify_client on;
		ssl_verify_depth 3;
		location / {
			return 200 "$ssl_client_serial";
		}
	}
}`, addr, p.serverCert, p.serverKey, clientCAFile))
	bench.WaitPort(t, addr, 10*time.Second)
	return addr
}

// upCaddyBackend starts a Caddy site requiring a client certificate from
// the proxy CA (client_auth); it answers with the serial it got.
func upCaddyBackend(t *testing.T, p *upPKI) string {
	t.Helper()
	addr := bench.FreeAddr(t)
	bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	servers {
		# the proxy dials an IP address: no SNI to compare the Host with
		strict_sni_host insecure_off
	}
}
# no host name: the client_auth policy applies without SNI too
https://:%s {
	bind 127.0.0.1
	tls %s %s {
		client_auth {
			mode require_and_verify
			trust_pool file %s
		}
	}
	respond "{http.request.tls.client.serial}"
}
`, bench.Port(addr), p.serverCert, p.serverKey, p.proxyCAFile))
	bench.WaitPort(t, addr, 10*time.Second)
	return addr
}

// upFrontCaddyfile is a plain-HTTP front site whose body is given.
func upFrontCaddyfile(front, body string) string {
	return fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
}
http://%s {
%s
}
`, front, body)
}

func upProxy(backend, transport string) string {
	return fmt.Sprintf(`	reverse_proxy https://%s {
		transport mtls {
%s
		}
	}`, backend, transport)
}

var upClient = &http.Client{Timeout: 20 * time.Second}

func upGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := upClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func hexSerial(l *testpki.Leaf) string { return fmt.Sprintf("%X", l.Cert.SerialNumber) }

func decSerial(l *testpki.Leaf) string { return l.Cert.SerialNumber.String() }

// TestUpstreamNginx: nginx with ssl_verify_client on sees the proxy's
// identity; without one, or with a foreign one, nginx refuses it (nginx
// finishes the handshake and answers 400 itself, which Caddy passes on).
func TestUpstreamNginx(t *testing.T) {
	p := newUpPKI(t)
	backend := upNginx(t, p, p.proxyCAFile)
	leaf, cert, key := p.client(t, "proxy", p.proxyCA)
	_, fcert, fkey := p.client(t, "intruder", p.foreignCA)
	front := bench.FreeAddr(t)
	c := bench.Start(t, upFrontCaddyfile(front, `	handle /right {
`+upProxy(backend, "client_identity pem "+cert+" "+key+"\ntrust_pool file "+p.backendCAFile)+`
	}
	handle /foreign {
`+upProxy(backend, "client_identity pem "+fcert+" "+fkey+"\ntrust_pool file "+p.backendCAFile)+`
	}
	handle /none {
`+upProxy(backend, "trust_pool file "+p.backendCAFile)+`
	}
	handle /untrusted-backend {
`+upProxy(backend, "client_identity pem "+cert+" "+key+"\ntrust_pool file "+p.proxyCAFile)+`
	}`))

	if status, body := upGet(t, "http://"+front+"/right"); status != 200 || body != hexSerial(leaf) {
		t.Fatalf("right identity: %d %q, want 200 %s", status, body, hexSerial(leaf))
	}
	if status, body := upGet(t, "http://"+front+"/foreign"); status != 400 || !strings.Contains(body, "SSL certificate error") {
		t.Fatalf("foreign identity: %d %q, want nginx's 400 (SSL certificate error)", status, body)
	}
	if status, body := upGet(t, "http://"+front+"/none"); status != 400 || !strings.Contains(body, "No required SSL certificate") {
		t.Fatalf("no identity: %d %q, want nginx's 400 (No required SSL certificate)", status, body)
	}
	// our side refuses a backend outside the trust pool
	if status, _ := upGet(t, "http://"+front+"/untrusted-backend"); status != 502 {
		t.Fatalf("untrusted backend: %d, want 502", status)
	}
	c.WaitLog(t, `"reason":"unknown_authority"`, 5*time.Second)
	if !regexp.MustCompile(`"upstream TLS handshake failed".*"upstream":"` + backend + `".*"reason":"unknown_authority"`).MatchString(c.Log()) {
		t.Errorf("the failure log does not name the upstream and the reason:\n%s", c.Log())
	}
	// nginx requires a certificate: the log must not say it did not ask
	if !strings.Contains(c.Log(), `"client_identity":"none (the handshake failed before the client certificate step)"`) || strings.Contains(c.Log(), "not requested by the backend") {
		t.Errorf("the failure log misreports the client identity step:\n%s", ptmGrep(c.Log(), "upstream TLS handshake failed"))
	}
	metrics := c.Metrics(t)
	for _, want := range []string{
		`trustline_upstream_handshake_failures_total{reason="unknown_authority",upstream="` + backend + `"} 1`,
		`trustline_material_not_after_timestamp_seconds{kind="keystore",source="` + cert + `"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestUpstreamCaddyBackend: a Caddy backend with client_auth refuses a
// missing, foreign or expired identity in the handshake (TLS 1.3: after
// it, with its first read); the proxy answers 502 and logs why, naming the
// identity it presented.
func TestUpstreamCaddyBackend(t *testing.T) {
	p := newUpPKI(t)
	backend := upCaddyBackend(t, p)
	leaf, cert, key := p.client(t, "proxy", p.proxyCA)
	_, fcert, fkey := p.client(t, "intruder", p.foreignCA)
	// valid for a few seconds more: loads (with a warning), then expires
	now := time.Now()
	shortLived, scert, skey := p.client(t, "short-lived", p.proxyCA, testpki.Validity(now.Add(-time.Hour), now.Add(15*time.Second)))
	front := bench.FreeAddr(t)
	route := func(path, transport string) string {
		return "\thandle " + path + " {\n" + upProxy(backend, transport+"\ntrust_pool file "+p.backendCAFile) + "\n\t}\n"
	}
	c := bench.Start(t, upFrontCaddyfile(front,
		route("/right", "client_identity pem "+cert+" "+key)+
			route("/right-h1", "client_identity pem "+cert+" "+key+"\nversions 1.1")+
			route("/foreign", "client_identity pem "+fcert+" "+fkey)+
			route("/none", "")+
			route("/short", "client_identity pem "+scert+" "+skey+"\nkeepalive off")))
	c.WaitLog(t, "identity expires soon", 5*time.Second)

	for _, path := range []string{"/right", "/right-h1"} {
		if status, body := upGet(t, "http://"+front+path); status != 200 || body != decSerial(leaf) {
			t.Fatalf("%s: %d %q, want 200 %s", path, status, body, decSerial(leaf))
		}
	}
	if status, body := upGet(t, "http://"+front+"/short"); status != 200 || body != decSerial(shortLived) {
		t.Fatalf("short-lived identity before it expires: %d %q", status, body)
	}
	for _, tc := range []struct{ path, reason, who string }{
		{"/foreign", "bad_certificate", "CN=intruder"},
		{"/none", "certificate_required", "none (no client_identity configured)"},
	} {
		if status, _ := upGet(t, "http://"+front+tc.path); status != 502 {
			t.Fatalf("%s: %d, want 502", tc.path, status)
		}
		re := regexp.MustCompile(`"upstream TLS handshake failed".*"upstream":"` + backend + `".*"reason":"` + tc.reason + `".*"client_identity":"` + regexp.QuoteMeta(tc.who))
		deadline := time.Now().Add(5 * time.Second)
		for !re.MatchString(c.Log()) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !re.MatchString(c.Log()) {
			t.Errorf("%s: no log line with upstream, reason %s and identity %q (%s)", tc.path, tc.reason, tc.who, re)
		}
	}
	// the short-lived identity expires: the backend refuses it
	time.Sleep(time.Until(shortLived.Cert.NotAfter) + time.Second)
	if status, _ := upGet(t, "http://"+front+"/short"); status != 502 {
		t.Fatalf("expired identity: %d, want 502", status)
	}
	c.WaitLog(t, `"reason":"bad_certificate","client_identity":"CN=short-lived`, 5*time.Second)
	metrics := c.Metrics(t)
	for _, want := range []string{
		`trustline_upstream_handshake_failures_total{reason="bad_certificate",upstream="` + backend + `"}`,
		`trustline_upstream_handshake_failures_total{reason="certificate_required",upstream="` + backend + `"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(c.Log(), "PRIVATE KEY") {
		t.Error("a private key was logged")
	}
}

// TestUpstreamKeystoresFromRealTools: keystores made by openssl (PKCS#12
// in its default, modern encryption and with -legacy) and by Java's
// keytool (JKS and PKCS#12 converted from openssl's, and a JKS from
// -genkeypair with a separate key password) each give nginx the identity
// they hold.
func TestUpstreamKeystoresFromRealTools(t *testing.T) {
	bench.Need(t, "openssl")
	bench.Need(t, "keytool")
	p := newUpPKI(t)
	leaf, cert, key := p.client(t, "proxy", p.proxyCA)
	dir := p.dir
	modern := filepath.Join(dir, "modern.p12")
	bench.OpenSSL(t, "pkcs12", "-export", "-in", cert, "-inkey", key, "-out", modern, "-passout", "pass:changeit", "-name", "proxy")
	legacy := filepath.Join(dir, "legacy.p12")
	bench.OpenSSL(t, "pkcs12", "-export", "-legacy", "-in", cert, "-inkey", key, "-out", legacy, "-passout", "pass:changeit", "-name", "proxy")
	if info := bench.OpenSSL(t, "pkcs12", "-in", legacy, "-info", "-noout", "-legacy", "-passin", "pass:changeit"); !strings.Contains(info, "RC2") && !strings.Contains(info, "3DES") {
		t.Fatalf("openssl -legacy did not write a legacy store:\n%s", info)
	}
	jks := filepath.Join(dir, "imported.jks")
	bench.Keytool(t, "-importkeystore", "-noprompt", "-srckeystore", modern, "-srcstoretype", "pkcs12", "-srcstorepass", "changeit",
		"-destkeystore", jks, "-deststoretype", "jks", "-deststorepass", "storepass", "-srcalias", "proxy", "-destalias", "proxy", "-destkeypass", "storepass")
	javaP12 := filepath.Join(dir, "java.p12")
	bench.Keytool(t, "-importkeystore", "-noprompt", "-srckeystore", jks, "-srcstoretype", "jks", "-srcstorepass", "storepass",
		"-destkeystore", javaP12, "-deststoretype", "pkcs12", "-deststorepass", "javapass")
	genJKS := filepath.Join(dir, "generated.jks")
	bench.Keytool(t, "-genkeypair", "-keystore", genJKS, "-storetype", "jks", "-storepass", "storepass", "-keypass", "keypass",
		"-alias", "generated", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=keytool generated", "-validity", "2",
		"-ext", "EKU=clientAuth")
	genCert := filepath.Join(dir, "generated.pem")
	bench.Keytool(t, "-exportcert", "-rfc", "-keystore", genJKS, "-storepass", "storepass", "-alias", "generated", "-file", genCert)
	genPEM, err := os.ReadFile(genCert)
	if err != nil {
		t.Fatal(err)
	}
	// nginx trusts the proxy CA and the self-signed keytool identity
	clientCAs := testpki.WriteFile(t, dir, "client-cas.pem", append(p.proxyCA.CertPEM(), genPEM...))
	backend := upNginx(t, p, clientCAs)

	stores := []struct{ path, source string }{
		{"/openssl-modern", "pkcs12 " + modern + " {\npassword changeit\n}"},
		{"/openssl-legacy", "pkcs12 " + legacy + " {\npassword {env.TL_TEST_P12_PASS}\n}"},
		{"/keytool-jks", "jks " + jks + " {\npassword storepass\nalias proxy\n}"},
		{"/keytool-p12", "pkcs12 " + javaP12 + " {\npassword javapass\n}"},
		{"/keytool-genkeypair", "jks " + genJKS + " {\npassword storepass\nkey_password keypass\n}"},
	}
	var body strings.Builder
	for _, s := range stores {
		fmt.Fprintf(&body, "\thandle %s {\n%s\n\t}\n", s.path, upProxy(backend, "client_identity "+s.source+"\ntrust_pool file "+p.backendCAFile))
	}
	front := bench.FreeAddr(t)
	c := bench.New(t, "TL_TEST_P12_PASS=changeit")
	c.Start(t, upFrontCaddyfile(front, body.String()))
	for _, s := range stores {
		status, got := upGet(t, "http://"+front+s.path)
		want := hexSerial(leaf)
		if s.path == "/keytool-genkeypair" {
			want = "" // checked below: keytool picked the serial
		}
		if status != 200 || (want != "" && got != want) || got == "" {
			t.Errorf("%s: %d %q, want 200 %s", s.path, status, got, want)
		}
	}
	if strings.Contains(c.Log(), "changeit") || strings.Contains(c.Log(), "storepass") || strings.Contains(c.Log(), "keypass") {
		t.Error("a keystore password appears in the log")
	}
}

// TestUpstreamRotationUnderLoad: continuous requests through two proxied
// routes while one keystore file is replaced twice and the other identity,
// issued by Caddy's internal CA for one minute, is renewed: no request
// fails, and nginx sees each new serial soon after each rotation.
func TestUpstreamRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute-long test")
	}
	p := newUpPKI(t)
	one := p.proxyCA.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	p12 := testpki.WriteFile(t, p.dir, "proxy.p12", testpki.PKCS12Keystore(t, one, "pw", false))
	backend := bench.FreeAddr(t)
	front := bench.FreeAddr(t)
	c := bench.Start(t, upFrontCaddyfile(front, `	handle /file {
`+upProxy(backend, "client_identity pkcs12 "+p12+" {\npassword pw\n}\ntrust_pool file "+p.backendCAFile)+`
	}
	handle /internal {
`+upProxy(backend, "client_identity internal spiffe://example.org/proxy {\nlifetime 1m\n}\ntrust_pool file "+p.backendCAFile)+`
	}`))
	localRoot, err := os.ReadFile(filepath.Join(c.Dir, "data", "caddy", "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatalf("the internal CA's root: %v", err)
	}
	clientCAs := testpki.WriteFile(t, p.dir, "client-cas.pem", append(p.proxyCA.CertPEM(), localRoot...))
	// nginx on the address the front already proxies to
	bench.StartNginx(t, fmt.Sprintf(`http {
	access_log off;
	default_type text/plain;
	keepalive_requests 1000000;
	server {
		listen %s ssl;
		ssl_certificate %s;
		ssl_certificate_key %s;
		ssl_client_certificate %s;
		ssl_verify_client on;
		ssl_verify_depth 3;
		location / {
			return 200 "$ssl_client_serial";
		}
	}
}`, backend, p.serverCert, p.serverKey, clientCAs))
	bench.WaitPort(t, backend, 10*time.Second)

	type seen struct {
		at     time.Time
		serial string
	}
	var (
		mu      sync.Mutex
		history = map[string][]seen{}
		ok      atomic.Int64
		failed  atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for w := 0; w < 6; w++ {
		path := []string{"/file", "/internal"}[w%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get("http://" + front + path)
				if err != nil {
					failed.Add(1)
					t.Errorf("%s: %v", path, err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("%s: %d %s", path, resp.StatusCode, body)
					continue
				}
				ok.Add(1)
				mu.Lock()
				h := history[path]
				if len(h) == 0 || h[len(h)-1].serial != string(body) {
					history[path] = append(h, seen{time.Now(), string(body)})
				}
				mu.Unlock()
			}
		}()
	}
	last := func(path string) string {
		mu.Lock()
		defer mu.Unlock()
		h := history[path]
		if len(h) == 0 {
			return ""
		}
		return h[len(h)-1].serial
	}
	waitSerial := func(path, want, what string, limit time.Duration) {
		deadline := time.Now().Add(limit)
		for last(path) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: nginx still sees %s %s after %s, want %s", what, path, last(path), limit, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitSerial("/file", hexSerial(one), "start", 10*time.Second)
	first := last("/internal")
	if first == "" {
		time.Sleep(time.Second)
		first = last("/internal")
	}

	time.Sleep(3 * time.Second)
	two := p.proxyCA.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	testpki.WriteFile(t, p.dir, "proxy.p12", testpki.PKCS12Keystore(t, two, "pw", true))
	waitSerial("/file", hexSerial(two), "first replacement (legacy PKCS#12)", 3*time.Second)

	time.Sleep(3 * time.Second)
	three := p.proxyCA.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	testpki.WriteFile(t, p.dir, "proxy.p12", testpki.PKCS12Keystore(t, three, "pw", false))
	waitSerial("/file", hexSerial(three), "second replacement", 3*time.Second)

	// the internal certificate (one minute) is renewed after 40s
	deadline := time.Now().Add(70 * time.Second)
	for last("/internal") == first {
		if time.Now().After(deadline) {
			t.Fatalf("the internal identity was not renewed within 70s (serial %s)", first)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for _, path := range []string{"/file", "/internal"} {
		var trail []string
		for _, s := range history[path] {
			trail = append(trail, fmt.Sprintf("%s from %s", s.serial, s.at.Format("15:04:05.000")))
		}
		t.Logf("%s: nginx saw %s", path, strings.Join(trail, ", then "))
	}
	t.Logf("%d requests, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed across the rotations", failed.Load())
	}
	// once a rotation is seen, the old serial never comes back
	for path, h := range history {
		seenBefore := map[string]bool{}
		for _, s := range h {
			if seenBefore[s.serial] {
				t.Errorf("%s: serial %s came back after a rotation: %v", path, s.serial, h)
			}
			seenBefore[s.serial] = true
		}
	}
	if !strings.Contains(c.Log(), "upstream connections renewed") || !strings.Contains(c.Log(), `"msg":"issued identity"`) {
		t.Error("the rotations were not logged")
	}
}

// TestUpstreamBadInput: each broken client identity fails the config load
// with an error naming the directive, the file and the reason, and leaves
// the running config serving.
func TestUpstreamBadInput(t *testing.T) {
	p := newUpPKI(t)
	backend := upNginx(t, p, p.proxyCAFile)
	leaf, cert, key := p.client(t, "proxy", p.proxyCA)
	_, otherKey := p.proxyCA.Issue(t, testpki.CN("other")).WriteFiles(t, p.dir, "other")
	serverOnly := p.proxyCA.Issue(t, testpki.CN("server-only"), testpki.ServerOnly())
	soCert, soKey := serverOnly.WriteFiles(t, p.dir, "server-only")
	expired := p.proxyCA.Issue(t, testpki.CN("old"), testpki.ClientOnly(), testpki.Expired())
	exCert, exKey := expired.WriteFiles(t, p.dir, "expired")
	p12 := testpki.WriteFile(t, p.dir, "proxy.p12", testpki.PKCS12Keystore(t, leaf, "right", false))
	front := bench.FreeAddr(t)
	good := upFrontCaddyfile(front, upProxy(backend, "client_identity pem "+cert+" "+key+"\ntrust_pool file "+p.backendCAFile))
	c := bench.Start(t, good)
	if status, body := upGet(t, "http://"+front+"/"); status != 200 || body != hexSerial(leaf) {
		t.Fatalf("good config: %d %q", status, body)
	}
	for _, tc := range []struct {
		name, transport string
		want            []string
	}{
		{"wrong password", "client_identity pkcs12 " + p12 + " {\npassword wrong\n}", []string{"client_identity", p12, "wrong password"}},
		{"key not matching", "client_identity pem " + cert + " " + otherKey, []string{"client_identity", cert, "private key does not match"}},
		{"missing key", "client_identity pem " + cert + " " + filepath.Join(p.dir, "missing.key"), []string{"client_identity", "missing.key", "no such file"}},
		{"no clientAuth usage", "client_identity pem " + soCert + " " + soKey, []string{"client_identity", soCert, "lacks the clientAuth extended key usage"}},
		{"expired", "client_identity pem " + exCert + " " + exKey, []string{"client_identity", exCert, "expired at"}},
		{"unknown internal CA", "client_identity internal spiffe://example.org/proxy {\nca corp\n}", []string{"client_identity", "corp", "no such certificate authority"}},
		{"HTTP/3", "client_identity pem " + cert + " " + key + "\nversions 3", []string{"transport mtls", "versions 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Load(t, upFrontCaddyfile(front, upProxy(backend, tc.transport)))
			if err == nil {
				t.Fatal("the config was loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "right") {
				t.Errorf("the error shows the password: %v", err)
			}
			if status, body := upGet(t, "http://"+front+"/"); status != 200 || body != hexSerial(leaf) {
				t.Fatalf("after the refused load: %d %q, want the running config to serve", status, body)
			}
		})
	}
	// expiring soon: loads, with a warning
	soon := p.proxyCA.Issue(t, testpki.CN("soon"), testpki.ClientOnly(), testpki.Validity(time.Now().Add(-80*24*time.Hour), time.Now().Add(3*24*time.Hour)))
	soCert2, soKey2 := soon.WriteFiles(t, p.dir, "soon")
	if err := c.Load(t, upFrontCaddyfile(front, upProxy(backend, "client_identity pem "+soCert2+" "+soKey2+"\ntrust_pool file "+p.backendCAFile))); err != nil {
		t.Fatal(err)
	}
	c.WaitLog(t, "identity expires soon", 5*time.Second)
	if status, body := upGet(t, "http://"+front+"/"); status != 200 || body != hexSerial(soon) {
		t.Fatalf("expiring identity: %d %q", status, body)
	}
}

// TestUpstreamProxyProtocolAndHealthChecks: the http transport's PROXY
// protocol header goes before the TLS handshake; active health checks run
// over mTLS with the client identity (a failing check would take the only
// upstream out: 503). Caddy cannot health-check an upstream that expects
// the PROXY protocol (its dialer needs a client address), so the two run
// against two listeners.
func TestUpstreamProxyProtocolAndHealthChecks(t *testing.T) {
	p := newUpPKI(t)
	leaf, cert, key := p.client(t, "proxy", p.proxyCA)
	ppBackend, hcBackend := bench.FreeAddr(t), bench.FreeAddr(t)
	bench.StartNginx(t, fmt.Sprintf(`http {
	access_log off;
	default_type text/plain;
	ssl_certificate %[3]s;
	ssl_certificate_key %[4]s;
	ssl_client_certificate %[5]s;
	ssl_verify_client on;
	server {
		listen %[1]s ssl proxy_protocol;
		location / {
			return 200 "$proxy_protocol_addr $ssl_client_serial";
		}
	}
	server {
		listen %[2]s ssl;
		location /health {
			return 200 "healthy $ssl_client_serial";
		}
		location / {
			return 200 "$ssl_client_serial";
		}
	}
}`, ppBackend, hcBackend, p.serverCert, p.serverKey, p.proxyCAFile))
	bench.WaitPort(t, ppBackend, 10*time.Second)
	bench.WaitPort(t, hcBackend, 10*time.Second)
	transport := fmt.Sprintf("client_identity pem %s %s\n\t\t\ttrust_pool file %s", cert, key, p.backendCAFile)
	front := bench.FreeAddr(t)
	c := bench.Start(t, upFrontCaddyfile(front, fmt.Sprintf(`	handle /pp {
		reverse_proxy https://%s {
			transport mtls {
				proxy_protocol v2
				%s
			}
		}
	}
	handle /hc {
		reverse_proxy https://%s {
			health_uri /health
			health_interval 200ms
			health_body "^healthy %s$"
			transport mtls {
				%s
			}
		}
	}`, ppBackend, transport, hcBackend, hexSerial(leaf), transport)))
	if status, body := upGet(t, "http://"+front+"/pp"); status != 200 || body != "127.0.0.1 "+hexSerial(leaf) {
		t.Fatalf("PROXY protocol: %d %q, want 200 with the client address from the PROXY header and the serial", status, body)
	}
	time.Sleep(time.Second) // several health checks
	if status, body := upGet(t, "http://"+front+"/hc"); status != 200 || body != hexSerial(leaf) {
		t.Fatalf("health-checked upstream: %d %q, want 200", status, body)
	}
	if strings.Contains(c.Log(), "health_checker") {
		t.Fatalf("active health checks failed:\n%s", c.Log())
	}
}

// TestExampleReencrypt runs examples/reencrypt as it is, with the paths
// and ports replaced: curl -> Caddy (tls internal) -> nginx requiring the
// proxy's certificate from a PKCS#12 keystore, then a rotation.
func TestExampleReencrypt(t *testing.T) {
	dir := t.TempDir()
	backendCA, proxyCA := testpki.NewCA(t, "backend CA"), testpki.NewCA(t, "proxy CA")
	testpki.WriteFile(t, dir, "backend-ca.pem", backendCA.CertPEM())
	testpki.WriteFile(t, dir, "proxy-ca.pem", proxyCA.CertPEM())
	backendCA.Issue(t, testpki.DNS("backend.internal"), testpki.ServerOnly()).WriteFiles(t, dir, "backend")
	one := proxyCA.Issue(t, testpki.CN("edge-proxy"), testpki.ClientOnly())
	testpki.WriteFile(t, dir, "proxy.p12", testpki.PKCS12Keystore(t, one, "changeit", false))

	front, backend := bench.FreeAddr(t), bench.FreeAddr(t)
	replace := func(file string) string {
		data, err := os.ReadFile(bench.RepoPath("examples", "reencrypt", file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.NewReplacer(
			"admin localhost:2019", "admin {$TL_ADMIN}",
			"localhost:8443", "localhost:"+bench.Port(front),
			"127.0.0.1:9443", backend,
			"/etc/trustline/", dir+"/",
		).Replace(string(data))
	}
	bench.StartNginx(t, replace("nginx-backend.conf"))
	bench.WaitPort(t, backend, 10*time.Second)
	c := bench.Start(t, replace("Caddyfile"), "PROXY_P12_PASSWORD=changeit")
	root := filepath.Join(c.Dir, "data", "caddy", "pki", "authorities", "local", "root.crt")
	url := "https://localhost:" + bench.Port(front) + "/"
	get := func() string {
		body, stderr, code := bench.Curl(t, "--cacert", root, url)
		if code != 0 {
			t.Fatalf("curl: exit %d: %s", code, stderr)
		}
		return body
	}
	// the site's own certificate is issued in the background at start
	for i := 0; ; i++ {
		if _, _, code := bench.Curl(t, "--cacert", root, url); code == 0 {
			break
		} else if i == 100 {
			t.Fatalf("the front site never served (curl exit %d)", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := get(), "hello CN=edge-proxy, serial "+hexSerial(one)+"\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	two := proxyCA.Issue(t, testpki.CN("edge-proxy"), testpki.ClientOnly())
	testpki.WriteFile(t, dir, "proxy.p12", testpki.PKCS12Keystore(t, two, "changeit", false))
	want := "hello CN=edge-proxy, serial " + hexSerial(two) + "\n"
	deadline := time.Now().Add(2 * time.Second)
	for got := get(); got != want; got = get() {
		if time.Now().After(deadline) {
			t.Fatalf("2s after the rotation: %q, want %q", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestUpstreamLiveTruststore: with the suite's bundle trust pool, a CA
// added to the watched directory is trusted from the next upstream
// handshake, and a CA removed stops being trusted at once (the pool change
// renews the upstream connections), all without a reload.
func TestUpstreamLiveTruststore(t *testing.T) {
	p := newUpPKI(t)
	backend := upNginx(t, p, p.proxyCAFile)
	leaf, cert, key := p.client(t, "proxy", p.proxyCA)
	trustDir := t.TempDir()
	testpki.WriteFile(t, trustDir, "foreign.pem", p.foreignCA.CertPEM())
	front := bench.FreeAddr(t)
	c := bench.Start(t, upFrontCaddyfile(front, upProxy(backend, "client_identity pem "+cert+" "+key+"\ntrust_pool bundle "+trustDir)))
	url := "http://" + front + "/"
	if status, _ := upGet(t, url); status != 502 {
		t.Fatalf("backend CA not in the bundle: %d, want 502", status)
	}
	caFile := testpki.WriteFile(t, trustDir, "backend.pem", p.backendCA.CertPEM())
	waitStatus := func(want int, what string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			status, body := upGet(t, url)
			if status == want && (want != 200 || body == hexSerial(leaf)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %q after 2s, want %d", what, status, body, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus(200, "backend CA added")
	if err := os.Remove(caFile); err != nil {
		t.Fatal(err)
	}
	waitStatus(502, "backend CA removed (kept-alive connections too)")
	c.WaitLog(t, `"cause":"trust pool reloaded"`, time.Second)
}
