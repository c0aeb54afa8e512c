package integration

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// TestLiveTrustBundleReload: a CA added to a watched bundle directory is
// trusted by the next handshake, a CA removed is refused, a broken file is
// refused with a log line and the last good pool stays; all within 2s and
// without an admin reload.
func TestLiveTrustBundleReload(t *testing.T) {
	site := newMTLSSite(t)
	ca1, ca2 := testpki.NewCA(t, "ca one"), testpki.NewCA(t, "ca two")
	trustDir := t.TempDir()
	ca1File := testpki.WriteFile(t, trustDir, "ca1.pem", ca1.CertPEM())
	c := bench.Start(t, site.Caddyfile("verifier live_trust bundle "+trustDir))

	alice := site.client(t, "alice", ca1.Issue(t, testpki.CN("alice"), testpki.ClientOnly()))
	bob := site.client(t, "bob", ca2.Issue(t, testpki.CN("bob"), testpki.ClientOnly()))
	eventually(t, 2*time.Second, "alice (ca one) accepted", site.accepted(t, alice, "CN=alice"))
	eventually(t, 2*time.Second, "bob (ca two) refused", site.refused(t, bob))
	eventually(t, 2*time.Second, "no certificate refused", site.refused(t, nil))

	testpki.WriteFile(t, trustDir, "ca2.pem", ca2.CertPEM())
	eventually(t, 2*time.Second, "bob accepted once ca two is added", site.accepted(t, bob, "CN=bob"))

	mustRemove(t, ca1File)
	eventually(t, 2*time.Second, "alice refused once ca one is removed", site.refused(t, alice))

	testpki.WriteFile(t, trustDir, "broken.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	c.WaitLog(t, "keeping the last good version", 3*time.Second)
	if !strings.Contains(c.Log(), "broken.pem") {
		t.Error("the reload error does not name the broken file")
	}
	eventually(t, time.Second, "bob still accepted with the last good pool", site.accepted(t, bob, "CN=bob"))

	metrics := c.Metrics(t)
	for _, want := range []string{
		`trustline_material_reloads_total{kind="bundle",result="failed",source="` + trustDir + `"}`,
		`trustline_material_certificates{kind="bundle",source="` + trustDir + `"} 1`,
		`trustline_material_not_after_timestamp_seconds{kind="bundle",source="` + trustDir + `"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if m := regexp.MustCompile(`trustline_material_reloads_total\{kind="bundle",result="failed",source="[^"]*"\} (\d+)`).FindStringSubmatch(metrics); m == nil || m[1] == "0" {
		t.Errorf("failed reloads not counted: %v", m)
	}
}

// TestTrustStoreFromRealTools loads truststores made by Java's keytool (JKS,
// PKCS#12 in its modern and legacy encryptions) and checks that clients of
// the CA they hold are accepted, and others refused.
func TestTrustStoreFromRealTools(t *testing.T) {
	bench.Need(t, "keytool")
	site := newMTLSSite(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t, "tool ca")
	other := testpki.NewCA(t, "other ca")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	otherFile := testpki.WriteFile(t, dir, "other.pem", other.CertPEM())
	alice := site.client(t, "alice", ca.Issue(t, testpki.CN("alice"), testpki.ClientOnly()))
	bob := site.client(t, "bob", other.Issue(t, testpki.CN("bob"), testpki.ClientOnly()))

	keytoolImport := func(store, storetype, alias, file string, extra ...string) {
		args := append(extra, "-importcert", "-noprompt", "-alias", alias, "-file", file,
			"-keystore", store, "-storetype", storetype, "-storepass", "changeit")
		bench.Keytool(t, args...)
	}
	stores := map[string]string{}
	for _, st := range []struct {
		name, storetype string
		extra           []string
	}{
		{"jks", "JKS", nil},
		{"pkcs12-modern", "PKCS12", nil},
		{"pkcs12-legacy", "PKCS12", []string{"-J-Dkeystore.pkcs12.legacy"}},
	} {
		path := filepath.Join(dir, st.name+".store")
		keytoolImport(path, st.storetype, "toolca", caFile, st.extra...)
		keytoolImport(path, st.storetype, "otherca", otherFile, st.extra...)
		stores[st.name] = path
	}
	// the legacy file really is legacy, the modern one modern
	if out := bench.OpenSSL(t, "pkcs12", "-info", "-noout", "-in", stores["pkcs12-modern"], "-passin", "pass:changeit"); !strings.Contains(out, "PBES2") {
		t.Errorf("keytool's default PKCS#12 is not PBES2:\n%s", out)
	}

	c := bench.Start(t, site.Caddyfile("verifier live_trust truststore "+stores["jks"]+" {\n\t\t\t\tpassword {env.TS_PASSWORD}\n\t\t\t\talias toolca\n\t\t\t}"), "TS_PASSWORD=changeit")
	eventually(t, 2*time.Second, "jks: alice accepted", site.accepted(t, alice, "CN=alice"))
	eventually(t, 2*time.Second, "jks alias toolca: bob refused", site.refused(t, bob))

	for _, name := range []string{"pkcs12-modern", "pkcs12-legacy", "jks"} {
		if err := c.Load(t, site.Caddyfile("verifier live_trust truststore "+stores[name]+" {\n\t\t\t\tpassword changeit\n\t\t\t}")); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		eventually(t, 2*time.Second, name+": alice accepted", site.accepted(t, alice, "CN=alice"))
		eventually(t, 2*time.Second, name+": bob accepted", site.accepted(t, bob, "CN=bob"))
	}
	// OpenSSL 3.0 cannot mark PKCS#12 certificates as trusted (-jdktrust
	// came in 3.2): such a file is refused with a way out
	plainP12 := filepath.Join(dir, "openssl.p12")
	bench.OpenSSL(t, "pkcs12", "-export", "-nokeys", "-in", caFile, "-out", plainP12, "-passout", "pass:changeit")
	err := c.Load(t, site.Caddyfile("verifier live_trust truststore "+plainP12+" {\n\t\t\t\tpassword changeit\n\t\t\t}"))
	if err == nil || !strings.Contains(err.Error(), "openssl.p12") || !strings.Contains(err.Error(), "keytool -importcert") {
		t.Errorf("an OpenSSL PKCS#12 without trust attributes: %v", err)
	}
	if strings.Contains(c.Log(), "changeit") {
		t.Error("a truststore password appears in the log")
	}
}

// TestTrustStoreBadInput: every bad truststore is refused at admin load
// time with an error naming the directive and the file, and the running
// config keeps serving.
func TestTrustStoreBadInput(t *testing.T) {
	site := newMTLSSite(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	good := testpki.WriteFile(t, dir, "good.pem", ca.CertPEM())
	alice := site.client(t, "alice", ca.Issue(t, testpki.CN("alice"), testpki.ClientOnly()))
	c := bench.Start(t, site.Caddyfile("verifier live_trust bundle "+good))
	eventually(t, 2*time.Second, "alice accepted", site.accepted(t, alice, "CN=alice"))

	leaf := ca.Issue(t, testpki.CN("not a ca"))
	jksKeys := testpki.WriteFile(t, dir, "keys.jks", testpki.JKSKeystore(t, "me", leaf, "changeit", "changeit"))
	jks := testpki.WriteFile(t, dir, "trust.jks", testpki.JKSTruststore(t, map[string]*x509.Certificate{"ca": ca.Cert}, "changeit"))
	p12 := testpki.WriteFile(t, dir, "trust.p12", testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "changeit", false))
	truncated := testpki.WriteFile(t, dir, "truncated.p12", testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "changeit", false)[:200])
	emptyDir := t.TempDir()
	leafFile := testpki.WriteFile(t, dir, "leaf.pem", leaf.CertPEM())
	unreadable := testpki.WriteFile(t, dir, "unreadable.pem", ca.CertPEM())
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, clientAuth, want string }{
		{"missing file", "verifier live_trust truststore " + dir + "/nope.jks {\n password x\n}", `loading truststore \"` + dir + `/nope.jks\": open: no such file or directory`}, // quoted in the admin API's JSON
		{"wrong password jks", "verifier live_trust truststore " + jks + " {\n password wrong\n}", "wrong password"},
		{"wrong password pkcs12", "verifier live_trust truststore " + p12 + " {\n password wrong\n}", "wrong password"},
		{"truncated pkcs12", "verifier live_trust truststore " + truncated + " {\n password changeit\n}", "truncated.p12"},
		{"only private keys", "verifier live_trust truststore " + jksKeys + " {\n password changeit\n}", "only private-key entries"},
		{"empty directory", "verifier live_trust bundle " + emptyDir, "holds no .pem, .crt or .cer file"},
		{"not a CA", "verifier live_trust bundle " + leafFile, "is not a CA certificate"},
		{"unknown option", "verifier live_trust truststore " + jks + " {\n colour blue\n}", "unknown option 'colour'"},
		{"unknown source", "verifier live_trust nosuchpool /x", "verifier live_trust: unknown trust pool source 'nosuchpool' (expected one of: "},
		{"unset env password", "verifier live_trust truststore " + jks + " {\n password {env.TL_NO_SUCH_VAR}\n}", "password"},
	} {
		err := c.Load(t, site.Caddyfile(tc.clientAuth))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: load error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if os.Geteuid() != 0 { // root reads any file
		if err := c.Load(t, site.Caddyfile("verifier live_trust bundle "+unreadable)); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("unreadable file: %v", err)
		}
	}
	eventually(t, 2*time.Second, "the running config still serves", site.accepted(t, alice, "CN=alice"))

	// an expired CA is kept (a pool may carry one being retired) and logged
	expired := testpki.WriteFile(t, dir, "expired.pem", testpki.NewCA(t, "retired ca", testpki.Expired()).CertPEM())
	if err := c.Load(t, site.Caddyfile("verifier live_trust bundle "+good+" "+expired)); err != nil {
		t.Fatalf("a bundle with an expired CA: %v", err)
	}
	c.WaitLog(t, "trust anchor has expired", 3*time.Second)
	eventually(t, 2*time.Second, "alice accepted beside an expired CA", site.accepted(t, alice, "CN=alice"))

	// caddy validate provisions too, and says the same
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(site.Caddyfile("verifier live_trust truststore "+jks+" {\n password wrong\n}")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := c.Command(t, "validate", "--config", cfg, "--adapter", "caddyfile")
	if err == nil || !strings.Contains(out, "trust.jks") || !strings.Contains(out, "wrong password") {
		t.Errorf("caddy validate: %v\n%s", err, out)
	}
}

// TestPKILiveFollowsIntermediate: a client whose certificate comes from a
// renewed intermediate of Caddy's own CA (and who sends only its leaf) is
// accepted once the new intermediate is in storage, with no reload; one
// from the previous intermediate keeps working.
func TestPKILiveFollowsIntermediate(t *testing.T) {
	addr := bench.FreeAddr(t)
	caddyfile := fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%s {
	tls internal {
		client_auth {
			verifier live_trust pki_live local {
				poll_interval 1s
			}
		}
	}
	respond "hello {http.request.tls.client.subject}"
}
`, bench.Port(addr))
	c := bench.Start(t, caddyfile)
	pkiDir := filepath.Join(c.Dir, "data", "caddy", "pki", "authorities", "local")
	root := readCA(t, pkiDir, "root")
	inter := readCA(t, pkiDir, "intermediate")

	site := &mtlsSite{Addr: addr, URL: "https://localhost:" + bench.Port(addr) + "/", CAFile: filepath.Join(pkiDir, "root.crt"), dir: t.TempDir()}
	leafOnly := func(name string, ca *testpki.CA) []string {
		l := ca.Issue(t, testpki.CN(name), testpki.ClientOnly())
		l.Chain = nil // the client sends its leaf alone
		return site.client(t, name, l)
	}
	old := leafOnly("old", inter)
	eventually(t, 3*time.Second, "a leaf of the current intermediate", site.accepted(t, old, "CN=old"))

	// another node renews the intermediate in shared storage
	renewed := root.NewIntermediate(t, "renewed intermediate")
	fresh := leafOnly("fresh", renewed)
	eventually(t, 2*time.Second, "a leaf of an unknown intermediate refused", site.refused(t, fresh))
	testpki.WriteFile(t, pkiDir, "intermediate.crt", renewed.CertPEM())
	testpki.WriteFile(t, pkiDir, "intermediate.key", testpki.KeyPEM(renewed.Key))
	eventually(t, 5*time.Second, "the renewed intermediate trusted", site.accepted(t, fresh, "CN=fresh"))
	eventually(t, time.Second, "the previous intermediate still trusted", site.accepted(t, old, "CN=old"))
}

// readCA reads a CA certificate and key that Caddy's pki app stored.
func readCA(t *testing.T, dir, name string) *testpki.CA {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return testpki.ParseCA(t, certPEM, keyPEM)
}

// TestReloadsLeaveNothingBehind: admin reloads that switch between two
// watched sources leave exactly the watchers of the running config: no
// goroutine or file descriptor grows with the number of reloads.
func TestReloadsLeaveNothingBehind(t *testing.T) {
	site := newMTLSSite(t)
	ca := testpki.NewCA(t, "ca")
	dirA, dirB := t.TempDir(), t.TempDir()
	testpki.WriteFile(t, dirA, "ca.pem", ca.CertPEM())
	testpki.WriteFile(t, dirB, "ca.pem", ca.CertPEM())
	c := bench.Start(t, site.Caddyfile("verifier live_trust bundle "+dirA))
	alice := site.client(t, "alice", ca.Issue(t, testpki.CN("alice"), testpki.ClientOnly()))

	watchers := func() int {
		_, body := c.AdminGet(t, "/debug/pprof/goroutine?debug=1")
		return strings.Count(body, "material.(*Reloadable[...]).loop")
	}
	fds := func() int {
		entries, err := os.ReadDir("/proc/" + strconv.Itoa(c.PID()) + "/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	reload := func(i int) {
		dir := dirA
		if i%2 == 1 {
			dir = dirB
		}
		if err := c.Load(t, site.Caddyfile("verifier live_trust bundle "+dir)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 { // warm up
		reload(i)
	}
	eventually(t, 2*time.Second, "alice accepted", site.accepted(t, alice, "CN=alice"))
	baseFDs := fds()
	for i := range 20 {
		reload(i)
	}
	eventually(t, 3*time.Second, "one watcher after 20 reloads", func() (bool, string) {
		n := watchers()
		return n == 1, fmt.Sprintf("%d watcher goroutines", n)
	})
	eventually(t, 3*time.Second, "no file descriptor leak", func() (bool, string) {
		n := fds()
		return n <= baseFDs+2, fmt.Sprintf("%d fds, %d before", n, baseFDs)
	})
	eventually(t, 2*time.Second, "alice accepted after the reloads", site.accepted(t, alice, "CN=alice"))
}
