package integration

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// TestPassthroughMTLSKeystore: "mTLS in, mTLS out" at layer 4 with a
// rotating identity. A client does mTLS to caddy-l4's tls handler; the
// passthrough handler re-encrypts to an nginx stream server that requires
// client certificates, presenting a PKCS#12 keystore identity and
// verifying nginx against a PKCS#12 truststore, both watched:
//
//   - replacing the keystore file makes the next connection present the
//     new certificate (nginx's $ssl_client_serial), with no reload;
//   - a backend outside the trust pool is refused, the reason logged and
//     counted;
//   - changing the truststore applies to the next connection (a resumed
//     upstream session included), with no reload.
func TestPassthroughMTLSKeystore(t *testing.T) {
	bench.Need(t, "nginx")
	meshCA := testpki.NewCA(t, "mesh CA")       // the clients, and Caddy's layer-4 server certificate
	backendCA := testpki.NewCA(t, "backend CA") // nginx's certificate
	proxyCA := testpki.NewCA(t, "proxy CA")     // Caddy's client identity, trusted by nginx
	foreignCA := testpki.NewCA(t, "foreign CA") // a backend nobody should trust
	dir := t.TempDir()

	l4Cert, l4Key := meshCA.Issue(t, testpki.CN("l4"), testpki.DNS("db.example.com", "rogue.example.com"), testpki.ServerOnly()).WriteFiles(t, dir, "l4")
	meshCAFile := testpki.WriteFile(t, dir, "mesh-ca.pem", meshCA.CertPEM())
	goodCert, goodKey := backendCA.Issue(t, testpki.CN("db"), testpki.DNS("backend.internal"), testpki.ServerOnly()).WriteFiles(t, dir, "good")
	rogueCert, rogueKey := foreignCA.Issue(t, testpki.CN("rogue"), testpki.DNS("backend.internal"), testpki.ServerOnly()).WriteFiles(t, dir, "rogue")
	proxyCAFile := testpki.WriteFile(t, dir, "proxy-ca.pem", proxyCA.CertPEM())

	// nginx answers each connection with the serial of the client
	// certificate it verified, then closes
	good, rogue := bench.FreeAddr(t), bench.FreeAddr(t)
	nginx := bench.StartNginx(t, fmt.Sprintf(`stream {
	ssl_client_certificate %s;
	ssl_verify_client on;
	server {
		listen %s ssl;
		ssl_certificate %s;
		ssl_certificate_key %s;
		return "$ssl_client_serial\n";
	}
	server {
		listen %s ssl;
		ssl_certificate %s;
		ssl_certificate_key %s;
		return "$ssl_client_serial\n";
	}
}`, proxyCAFile, good, goodCert, goodKey, rogue, rogueCert, rogueKey))
	bench.WaitPort(t, good, 10*time.Second)
	bench.WaitPort(t, rogue, 10*time.Second)

	one := proxyCA.Issue(t, testpki.CN("caddy-proxy"), testpki.ClientOnly())
	keystore := testpki.WriteFile(t, dir, "proxy.p12", testpki.PKCS12Keystore(t, one, "ks-secret", false))
	setTrust := func(cas ...*testpki.CA) {
		var certs []*x509.Certificate
		for _, ca := range cas {
			certs = append(certs, ca.Cert)
		}
		testpki.WriteFile(t, dir, "backends.p12", testpki.PKCS12Truststore(t, certs, "ts-secret", false))
	}
	setTrust(backendCA)
	truststore := dir + "/backends.p12"

	l4 := bench.FreeAddr(t)
	upstreamTLS := fmt.Sprintf(`tls {
						client_identity pkcs12 %s {
							password {env.TL_PROXY_P12_PASSWORD}
						}
						trust_pool truststore %s {
							password ts-secret
						}
						server_name backend.internal
					}`, keystore, truststore)
	terminate := fmt.Sprintf(`tls {
					connection_policy {
						client_auth {
							mode require_and_verify
							trust_pool file %s
						}
					}
				}`, meshCAFile)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	layer4 {
		%[1]s {
			@db clienthello db.example.com
			route @db {
				%[2]s
				passthrough %[3]s {
					name db
					%[4]s
				}
			}
			@rogue clienthello rogue.example.com
			route @rogue {
				%[2]s
				passthrough %[5]s {
					name rogue
					%[4]s
				}
			}
		}
	}
}

# loads the layer-4 listener's certificate into Caddy's tls app
https://db.example.com:%[6]s {
	bind 127.0.0.1
	tls %[7]s %[8]s
	respond "site"
}
`, l4, terminate, good, upstreamTLS, rogue, bench.Port(bench.FreeAddr(t)), l4Cert, l4Key), "TL_PROXY_P12_PASSWORD=ks-secret")
	bench.WaitPort(t, l4, 10*time.Second)

	alice := meshCA.Issue(t, testpki.CN("alice"), testpki.ClientOnly()).TLS()
	// serial connects as alice and returns the client serial the backend
	// saw, or the error that ended the connection first
	serial := func(sni string) (string, error) {
		t.Helper()
		raw, err := net.DialTimeout("tcp", l4, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(15 * time.Second))
		tc := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: meshCA.Pool(), Certificates: []tls.Certificate{alice}})
		line, err := bufio.NewReader(tc).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	want := func(sni, serialHex string) {
		t.Helper()
		if got, err := serial(sni); err != nil || got != serialHex {
			t.Fatalf("%s: backend saw client serial %q (%v), want %s\n%s", sni, got, err, serialHex, nginx.Log())
		}
	}
	refused := func(sni, route, reason string) {
		t.Helper()
		n := len(ptLogLines(c, "upstream TLS handshake failed"))
		if got, err := serial(sni); err == nil {
			t.Fatalf("%s: reached a backend outside the trust pool (it saw %s)", sni, got)
		}
		l := ptWaitLogLines(t, c, "upstream TLS handshake failed", n+1, nil)[n]
		if l["route"] != route || l["reason"] != reason || l["server_name"] != "backend.internal" ||
			!strings.Contains(fmt.Sprint(l["client_identity_source"]), "proxy.p12") {
			t.Fatalf("%s: failure log %v, want route %s, reason %s", sni, l, route, reason)
		}
	}
	renewed := func(route, cause string, n int) {
		t.Helper()
		ptWaitLogLines(t, c, "upstream TLS sessions renewed: new connections present the current identity, open ones keep theirs", n,
			func(m map[string]any) bool { return m["route"] == route && m["cause"] == cause })
	}

	// the keystore identity, twice (the second connection may resume)
	want("db.example.com", hexSerial(one))
	want("db.example.com", hexSerial(one))

	// rotation: replace the keystore file, no reload
	two := proxyCA.Issue(t, testpki.CN("caddy-proxy"), testpki.ClientOnly())
	testpki.WriteFile(t, dir, "proxy.p12", testpki.PKCS12Keystore(t, two, "ks-secret", false))
	renewed("db", "client identity rotated", 1)
	want("db.example.com", hexSerial(two))

	// a backend outside the live trust pool
	refused("rogue.example.com", "rogue", "unknown_authority")
	metrics := c.Metrics(t)
	failures := regexp.MustCompile(`trustline_upstream_handshake_failures_total\{reason="unknown_authority",upstream="` + regexp.QuoteMeta(rogue) + `"\} ([0-9]+)`)
	if m := failures.FindStringSubmatch(metrics); m == nil || m[1] == "0" {
		t.Fatalf("no unknown_authority failure counted for %s:\n%s", rogue, ptmGrep(metrics, "trustline_upstream_handshake_failures_total"))
	}

	// truststore change: the foreign CA added, then the backend's CA removed
	setTrust(backendCA, foreignCA)
	renewed("rogue", "trust pool reloaded", 1)
	want("rogue.example.com", hexSerial(two))
	setTrust(foreignCA)
	renewed("db", "trust pool reloaded", 2)
	refused("db.example.com", "db", "unknown_authority")
	if strings.Contains(c.Log(), "ks-secret") || strings.Contains(c.Log(), "ts-secret") {
		t.Fatal("a store password is in the log")
	}
}

// ptmGrep returns the lines of s that contain substr.
func ptmGrep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
