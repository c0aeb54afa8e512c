package keystore

import (
	"crypto/tls"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	"github.com/trustline/trustline/internal/testpki"
)

// testCtx is a provisioned Caddy context with file storage in a temp dir
// and a pki app whose local CA is not installed anywhere.
func testCtx(t testing.TB) caddy.Context {
	t.Helper()
	return testCtxIn(t, t.TempDir())
}

// testCtxIn is testCtx with storage in dir (nodes sharing storage).
func testCtxIn(t testing.TB, dir string) caddy.Context {
	t.Helper()
	storage, _ := json.Marshal(map[string]string{"module": "file_system", "root": dir})
	cfg := &caddy.Config{
		StorageRaw: storage,
		AppsRaw: caddy.ModuleMap{
			"pki": json.RawMessage(`{"certificate_authorities":{"local":{"install_trust":false},"other":{"install_trust":false}}}`),
		},
	}
	base, err := caddy.ProvisionContext(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(base)
	t.Cleanup(cancel)
	return ctx
}

// load provisions a keystore source from its JSON, as a consumer does.
func load(t testing.TB, ctx caddy.Context, js string, usage Usage) (Source, error) {
	t.Helper()
	holder := &struct {
		Raw json.RawMessage `json:"raw" caddy:"namespace=trustline.keystore inline_key=source"`
	}{Raw: json.RawMessage(js)}
	return Load(ctx, holder, "Raw", usage)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func serial(c *tls.Certificate) string { return c.Leaf.SerialNumber.String() }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestPEMRotationKeepsLastGood(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	inter := ca.NewIntermediate(t, "inter")
	dir := t.TempDir()
	one := inter.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	certFile, keyFile := one.WriteFiles(t, dir, "id")
	src, err := load(t, testCtx(t), mustJSON(map[string]string{"source": "pem", "certificate": certFile, "key": keyFile}), UsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	id := src.KeyPair()
	if serial(id) != one.Cert.SerialNumber.String() || len(id.Certificate) != 2 {
		t.Fatalf("identity %s with %d certificates, want %s with its intermediate", serial(id), len(id.Certificate), one.Cert.SerialNumber)
	}
	var changes atomic.Int32
	src.OnChange(func() { changes.Add(1) })

	// a deploy tool replacing the key first, then the certificate: the
	// half-written pair does not match and is refused
	two := inter.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	testpki.WriteFile(t, dir, "id.key", two.KeyPEM())
	time.Sleep(300 * time.Millisecond)
	if got := serial(src.KeyPair()); got != one.Cert.SerialNumber.String() {
		t.Fatalf("a mismatched pair was taken: %s", got)
	}
	testpki.WriteFile(t, dir, "id.crt", two.CertPEM())
	waitFor(t, "the new identity", func() bool { return serial(src.KeyPair()) == two.Cert.SerialNumber.String() })

	// an expired replacement is refused; the last good one stays
	expired := inter.Issue(t, testpki.CN("proxy"), testpki.Expired())
	testpki.WriteFile(t, dir, "id.crt", expired.CertPEM())
	testpki.WriteFile(t, dir, "id.key", expired.KeyPEM())
	time.Sleep(1500 * time.Millisecond)
	if got := serial(src.KeyPair()); got != two.Cert.SerialNumber.String() {
		t.Fatalf("after an expired replacement: %s, want the last good", got)
	}
	if n := changes.Load(); n != 1 {
		t.Fatalf("%d change notifications, want 1", n)
	}
}

func TestStoresLoad(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	inter := ca.NewIntermediate(t, "inter")
	leaf := inter.Issue(t, testpki.CN("proxy"), testpki.URI("spiffe://example.org/proxy"))
	dir := t.TempDir()
	modern := testpki.WriteFile(t, dir, "modern.p12", testpki.PKCS12Keystore(t, leaf, "s3cret", false))
	legacy := testpki.WriteFile(t, dir, "legacy.p12", testpki.PKCS12Keystore(t, leaf, "s3cret", true))
	jks := testpki.WriteFile(t, dir, "id.jks", testpki.JKSKeystore(t, "proxy", leaf, "storepass", "keypass"))
	t.Setenv("TL_TEST_STORE_PASS", "s3cret")
	passFile := testpki.WriteFile(t, dir, "pass.txt", []byte("storepass\n"))
	ctx := testCtx(t)
	for name, js := range map[string]string{
		"pkcs12 modern":         mustJSON(map[string]string{"source": "pkcs12", "path": modern, "password": "s3cret"}),
		"pkcs12 legacy":         mustJSON(map[string]string{"source": "pkcs12", "path": legacy, "password": "{env.TL_TEST_STORE_PASS}"}),
		"jks with key password": mustJSON(map[string]string{"source": "jks", "path": jks, "password": "{file." + passFile + "}", "key_password": "keypass", "alias": "proxy"}),
		"jks source, p12 file":  mustJSON(map[string]string{"source": "jks", "path": modern, "password": "s3cret"}),
	} {
		t.Run(name, func(t *testing.T) {
			src, err := load(t, ctx, js, UsageClientAuth)
			if err != nil {
				t.Fatal(err)
			}
			id := src.KeyPair()
			if serial(id) != leaf.Cert.SerialNumber.String() {
				t.Fatalf("serial %s, want %s", serial(id), leaf.Cert.SerialNumber)
			}
			if len(id.Certificate) != 2 {
				t.Fatalf("%d certificates, want the leaf and its intermediate", len(id.Certificate))
			}
		})
	}
}

// TestBadInput checks that each broken keystore fails provisioning with an
// error naming the file and the reason.
func TestBadInput(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.CN("proxy"))
	other := ca.Issue(t, testpki.CN("other"))
	serverOnly := ca.Issue(t, testpki.CN("server"), testpki.ServerOnly())
	expired := ca.Issue(t, testpki.CN("old"), testpki.Expired())
	dir := t.TempDir()
	certFile, keyFile := leaf.WriteFiles(t, dir, "leaf")
	_, otherKey := other.WriteFiles(t, dir, "other")
	serverCert, serverKey := serverOnly.WriteFiles(t, dir, "server")
	expCert, expKey := expired.WriteFiles(t, dir, "expired")
	certOnly := testpki.WriteFile(t, dir, "certonly.pem", leaf.CertPEM())
	p12 := testpki.WriteFile(t, dir, "id.p12", testpki.PKCS12Keystore(t, leaf, "right", false))
	trust := testpki.WriteFile(t, dir, "trust.p12", testpki.PKCS12Truststore(t, ca.Chain, "right", false))
	jksOne := testpki.WriteFile(t, dir, "one.jks", testpki.JKSKeystore(t, "a", leaf, "pw", "pw"))
	jks := testpki.WriteFile(t, dir, "id.jks", testpki.JKSKeystore(t, "proxy", leaf, "storepass", "keypass"))
	ctx := testCtx(t)
	cases := []struct {
		name  string
		js    string
		usage Usage
		want  []string
	}{
		{"key not matching", mustJSON(map[string]string{"source": "pem", "certificate": certFile, "key": otherKey}), UsageAny,
			[]string{certFile, "private key does not match"}},
		{"missing key", mustJSON(map[string]string{"source": "pem", "certificate": certFile, "key": certOnly}), UsageAny,
			[]string{certFile, "PEM"}},
		{"missing file", mustJSON(map[string]string{"source": "pem", "certificate": filepath.Join(dir, "nope.crt"), "key": keyFile}), UsageAny,
			[]string{"nope.crt", "no such file"}},
		{"no clientAuth usage", mustJSON(map[string]string{"source": "pem", "certificate": serverCert, "key": serverKey}), UsageClientAuth,
			[]string{serverCert, "lacks the clientAuth extended key usage", "serverAuth"}},
		{"expired", mustJSON(map[string]string{"source": "pem", "certificate": expCert, "key": expKey}), UsageClientAuth,
			[]string{expCert, "expired at"}},
		{"wrong password", mustJSON(map[string]string{"source": "pkcs12", "path": p12, "password": "wrong"}), UsageAny,
			[]string{p12, "wrong password"}},
		{"truststore as keystore", mustJSON(map[string]string{"source": "pkcs12", "path": trust, "password": "right"}), UsageAny,
			[]string{trust, "no private key"}},
		{"unknown placeholder", mustJSON(map[string]string{"source": "pkcs12", "path": p12, "password": "{env.TL_NO_SUCH_VAR_X}"}), UsageAny,
			[]string{p12, "password"}},
		{"jks wrong key password", mustJSON(map[string]string{"source": "jks", "path": jks, "password": "storepass", "key_password": "wrong"}), UsageAny,
			[]string{jks, "key password"}},
		{"jks wrong store password", mustJSON(map[string]string{"source": "jks", "path": jks, "password": "nope"}), UsageAny,
			[]string{jks, "wrong password"}},
		{"jks unknown alias", mustJSON(map[string]string{"source": "jks", "path": jksOne, "password": "pw", "alias": "zzz"}), UsageAny,
			[]string{jksOne, `no private-key entry "zzz"`}},
		{"alias on a pkcs12 file", mustJSON(map[string]string{"source": "jks", "path": p12, "password": "right", "alias": "x"}), UsageAny,
			[]string{p12, "cannot be chosen by alias"}},
		{"bad usage name", mustJSON(map[string]string{"source": "pem", "certificate": certFile, "key": keyFile, "usage": "email"}), UsageAny,
			[]string{"usage", "client_auth, server_auth or any"}},
		{"pem without key", mustJSON(map[string]string{"source": "pem", "certificate": certFile}), UsageAny,
			[]string{"keystore pem", "key file are required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, ctx, tc.js, tc.usage)
			if err == nil {
				t.Fatal("loaded")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, secret := range []string{"right", "storepass", "keypass"} {
				if strings.Contains(err.Error(), "\""+secret+"\"") {
					t.Errorf("error %q shows a password", err)
				}
			}
		})
	}
}

func TestUsageNotOverridden(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	serverOnly := ca.Issue(t, testpki.CN("server"), testpki.ServerOnly())
	cert, key := serverOnly.WriteFiles(t, t.TempDir(), "s")
	// an explicit usage in the JSON wins over the consumer's
	src, err := load(t, testCtx(t), mustJSON(map[string]string{"source": "pem", "certificate": cert, "key": key, "usage": "any"}), UsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	if src.KeyPair() == nil {
		t.Fatal("no identity")
	}
}

func TestUnmarshalSource(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{`client_identity pem /a.crt /a.key`, `{"certificate":"/a.crt","key":"/a.key","source":"pem"}`, ""},
		{"client_identity pem {\n certificate /a.crt\n key /a.key\n}", `{"certificate":"/a.crt","key":"/a.key","source":"pem"}`, ""},
		{"client_identity pkcs12 /a.p12 {\n password {env.P}\n}", `{"password":"{env.P}","path":"/a.p12","source":"pkcs12"}`, ""},
		{"client_identity jks /a.jks {\n password a\n key_password b\n alias proxy\n}", `{"alias":"proxy","key_password":"b","password":"a","path":"/a.jks","source":"jks"}`, ""},
		{"client_identity internal spiffe://example.org/proxy proxy.svc {\n lifetime 1m\n ca other\n}", `{"ca":"other","dns_names":["proxy.svc"],"lifetime":60000000000,"source":"internal","spiffe_id":"spiffe://example.org/proxy"}`, ""},
		{"client_identity internal {\n common_name proxy\n dns a b\n}", `{"common_name":"proxy","dns_names":["a","b"],"source":"internal"}`, ""},
		{`client_identity`, "", "expected a keystore source"},
		{`client_identity p12 /x`, "", "unknown keystore source 'p12'"},
		{`client_identity pem /a.crt`, "", "expected <certificate_file> <key_file>"},
		{"client_identity pem /a /b {\n key /c\n}", "", "given both as an argument and in the block"},
		{"client_identity pkcs12 /a.p12 {\n password a\n password b\n}", "", "duplicate option 'password'"},
		{"client_identity pkcs12 /a.p12 {\n passwd a\n}", "", "unknown option 'passwd' (expected password)"},
		{"client_identity pkcs12 /a.p12 {\n password\n}", "", "password needs a value"},
		{"client_identity pkcs12", "", "expected the path"},
		{"client_identity pkcs12 /a.p12 extra", "", "unexpected argument 'extra'"},
		{"client_identity jks /a.jks {\n alias a b\n}", "", "alias takes one value"},
		{"client_identity internal", "", "at least one name"},
		{"client_identity internal spiffe://a/b spiffe://a/c", "", "two SPIFFE IDs"},
		{"client_identity internal spiffe://Bad_TD/x", "", "spiffe_id"},
		{"client_identity internal x {\n lifetime 10s\n}", "", "too short"},
		{"client_identity internal x {\n lifetime soon\n}", "", "lifetime 'soon'"},
		{"client_identity internal x {\n issuer local\n}", "", "unknown option 'issuer'"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(tc.in)
			d.Next()
			raw, err := UnmarshalSource(d, "client_identity")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(raw) != tc.want {
				t.Fatalf("got  %s\nwant %s", raw, tc.want)
			}
		})
	}
}

func TestDescribeNeverShowsKey(t *testing.T) {
	leaf := testpki.NewCA(t, "root").Issue(t, testpki.CN("proxy"))
	c := leaf.TLS()
	got := Describe(&c)
	if !strings.Contains(got, "CN=proxy") || !strings.Contains(got, leaf.Cert.SerialNumber.Text(16)) {
		t.Fatalf("Describe = %q", got)
	}
	if Describe(nil) != "none" {
		t.Fatal("Describe(nil)")
	}
}

func TestCertGetterServesCurrent(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	dir := t.TempDir()
	one := ca.Issue(t, testpki.DNS("site.test"), testpki.ServerOnly())
	cert, key := one.WriteFiles(t, dir, "site")
	ctx := testCtx(t)
	mod, err := ctx.LoadModuleByID("tls.get_certificate.keystore", json.RawMessage(
		mustJSON(map[string]any{"keystore": map[string]string{"source": "pem", "certificate": cert, "key": key}})))
	if err != nil {
		t.Fatal(err)
	}
	g := mod.(*CertGetter)
	got, err := g.GetCertificate(ctx, &tls.ClientHelloInfo{ServerName: "site.test"})
	if err != nil || serial(got) != one.Cert.SerialNumber.String() {
		t.Fatalf("got %v, %v", got, err)
	}
	two := ca.Issue(t, testpki.DNS("site.test"), testpki.ServerOnly())
	two.WriteFiles(t, dir, "site")
	waitFor(t, "the rotated certificate", func() bool {
		got, _ := g.GetCertificate(ctx, &tls.ClientHelloInfo{ServerName: "site.test"})
		return serial(got) == two.Cert.SerialNumber.String()
	})

	// a client-only certificate cannot serve a site
	clientOnly := ca.Issue(t, testpki.ClientOnly())
	cc, ck := clientOnly.WriteFiles(t, dir, "client")
	_, err = ctx.LoadModuleByID("tls.get_certificate.keystore", json.RawMessage(
		mustJSON(map[string]any{"keystore": map[string]string{"source": "pem", "certificate": cc, "key": ck}})))
	if err == nil || !strings.Contains(err.Error(), "serverAuth") {
		t.Fatalf("client-only certificate: %v", err)
	}
}

// BenchmarkKeyPair is the keystore lookup a handshake makes: one atomic
// load, no lock, no allocation.
func BenchmarkKeyPair(b *testing.B) {
	leaf := testpki.NewCA(b, "root").Issue(b, testpki.ClientOnly())
	cert, key := leaf.WriteFiles(b, b.TempDir(), "id")
	src, err := load(b, testCtx(b), mustJSON(map[string]string{"source": "pem", "certificate": cert, "key": key}), UsageClientAuth)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if src.KeyPair() == nil {
				b.Fatal("nil identity")
			}
		}
	})
}

// FuzzUnmarshalSource: any Caddyfile text gives a keystore JSON or an
// error, never a panic.
func FuzzUnmarshalSource(f *testing.F) {
	for _, s := range []string{
		"client_identity pem /a.crt /a.key",
		"client_identity pkcs12 /a.p12 {\n password {env.P}\n}",
		"client_identity jks /a.jks {\n alias a\n key_password b\n}",
		"client_identity internal spiffe://td/x {\n lifetime 1m\n dns a b\n}",
		"client_identity internal {\n}",
		"client_identity",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tokens, err := caddyfile.Tokenize([]byte(s), "Caddyfile")
		if err != nil || len(tokens) == 0 {
			return
		}
		d := caddyfile.NewDispenser(tokens)
		d.Next()
		raw, err := UnmarshalSource(d, "client_identity")
		if err == nil && !json.Valid(raw) {
			t.Fatalf("invalid JSON %s", raw)
		}
	})
}
