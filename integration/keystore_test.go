package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// servedSerial connects to addr as serverName, trusting roots, and
// returns the serial of the certificate served (hex, upper case).
func servedSerial(t *testing.T, addr, serverName string, roots *x509.CertPool) (string, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: serverName, RootCAs: roots})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return fmt.Sprintf("%X", conn.ConnectionState().PeerCertificates[0].SerialNumber), nil
}

func siteCaddyfile(addr, name, getCert string) string {
	return fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://%s:%s {
	bind 127.0.0.1
	tls {
		get_certificate keystore %s
	}
	respond "served from a keystore"
}
`, name, bench.Port(addr), getCert)
}

// TestKeystoreServesSite: a site's certificate comes from a PKCS#12
// keystore, and a replaced keystore is served from the next handshake on,
// without a reload; a keytool-made JKS serves too; a certificate without
// the serverAuth usage is refused at load.
func TestKeystoreServesSite(t *testing.T) {
	ca := testpki.NewCA(t, "site root")
	dir := t.TempDir()
	one := ca.Issue(t, testpki.DNS("site.test"), testpki.ServerOnly())
	p12 := testpki.WriteFile(t, dir, "site.p12", testpki.PKCS12Keystore(t, one, "pw", false))
	addr := bench.FreeAddr(t)
	c := bench.Start(t, siteCaddyfile(addr, "site.test", "pkcs12 "+p12+" {\n\t\t\tpassword pw\n\t\t}"))
	bench.WaitPort(t, addr, 10*time.Second)
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())

	body, stderr, code := bench.Curl(t, "--cacert", caFile, "--resolve", "site.test:"+bench.Port(addr)+":127.0.0.1", "https://site.test:"+bench.Port(addr)+"/")
	if code != 0 || body != "served from a keystore" {
		t.Fatalf("curl: exit %d, %q %s", code, body, stderr)
	}
	if got, err := servedSerial(t, addr, "site.test", ca.Pool()); err != nil || got != hexSerial(one) {
		t.Fatalf("served %s (%v), want %s", got, err, hexSerial(one))
	}

	two := ca.Issue(t, testpki.DNS("site.test"), testpki.ServerOnly())
	testpki.WriteFile(t, dir, "site.p12", testpki.PKCS12Keystore(t, two, "pw", true))
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := servedSerial(t, addr, "site.test", ca.Pool())
		if err == nil && got == hexSerial(two) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("2s after the keystore was replaced, the site serves %s (%v), want %s", got, err, hexSerial(two))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// a JKS from keytool, as Java platforms have them
	bench.Need(t, "keytool")
	jks := filepath.Join(dir, "tomcat.jks")
	bench.Keytool(t, "-genkeypair", "-keystore", jks, "-storetype", "jks", "-storepass", "storepass", "-keypass", "keypass",
		"-alias", "tomcat", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=site.test", "-validity", "2",
		"-ext", "SAN=dns:site.test", "-ext", "EKU=serverAuth")
	jksCert := filepath.Join(dir, "tomcat.pem")
	bench.Keytool(t, "-exportcert", "-rfc", "-keystore", jks, "-storepass", "storepass", "-alias", "tomcat", "-file", jksCert)
	pemData, err := os.ReadFile(jksCert)
	if err != nil {
		t.Fatal(err)
	}
	javaRoots := x509.NewCertPool()
	javaRoots.AppendCertsFromPEM(pemData)
	if err := c.Load(t, siteCaddyfile(addr, "site.test", "jks "+jks+" {\n\t\t\tpassword storepass\n\t\t\tkey_password keypass\n\t\t\talias tomcat\n\t\t}")); err != nil {
		t.Fatal(err)
	}
	if _, err := servedSerial(t, addr, "site.test", javaRoots); err != nil {
		t.Fatalf("the keytool JKS is not served: %v", err)
	}

	// a client-only certificate cannot serve a site: refused at load
	clientOnly := ca.Issue(t, testpki.DNS("site.test"), testpki.ClientOnly())
	bad := testpki.WriteFile(t, dir, "client.p12", testpki.PKCS12Keystore(t, clientOnly, "pw", false))
	err = c.Load(t, siteCaddyfile(addr, "site.test", "pkcs12 "+bad+" {\n\t\t\tpassword pw\n\t\t}"))
	if err == nil || !strings.Contains(err.Error(), "lacks the serverAuth extended key usage") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("client-only keystore: %v", err)
	}
	if _, err := servedSerial(t, addr, "site.test", javaRoots); err != nil {
		t.Fatalf("after the refused load, the running config no longer serves: %v", err)
	}
}
