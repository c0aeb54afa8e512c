package redis

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
	_ "github.com/trustline/trustline/modules/truststore"
)

func strconvQuote(s string) string { return strconv.Quote(s) }

// provision provisions r as Caddy does (Provision, then Validate) and
// cleans it up when the test ends.
func provision(t *testing.T, r *Redis) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := r.Provision(ctx); err != nil {
		return err
	}
	t.Cleanup(func() { r.Cleanup() })
	return r.Validate()
}

func roundTrip(t *testing.T, r *Redis) {
	t.Helper()
	st, err := r.CertMagicStorage()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Store(ctx, "certificates/x/x.crt", []byte("cert")); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Load(ctx, "certificates/x/x.crt"); err != nil || string(v) != "cert" {
		t.Fatalf("Load = %q, %v", v, err)
	}
}

func writeKeyFile(t *testing.T, dir, name string) string {
	t.Helper()
	raw := make([]byte, 32)
	rand.Read(raw)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProvisionAndEncryptionFromFile(t *testing.T) {
	addr := startRedis(t)
	keyFile := writeKeyFile(t, t.TempDir(), "k.key")
	r := &Redis{Addresses: []string{addr}, KeyPrefix: "node", Encryption: &Encryption{Key: &KeySource{File: keyFile, ID: "2026-11"}}}
	if err := provision(t, r); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, r)
	raw, _ := rawClient(t, addr).HGet(context.Background(), "{node}:v:certificates/x/x.crt", "v").Bytes()
	if h, err := parseSealed(raw); err != nil || h.keyID != "2026-11" {
		t.Errorf("stored value not sealed with 2026-11: %v", err)
	}
	if err := r.Cleanup(); err != nil {
		t.Fatal(err)
	}
	st, _ := r.CertMagicStorage()
	if _, err := st.Load(context.Background(), "certificates/x/x.crt"); err == nil {
		t.Error("Load after Cleanup succeeded: the client was not closed")
	}
}

func TestProvisionWrongPassword(t *testing.T) {
	addr := startRedis(t, "--requirepass", "s3cret-Pa55")
	t.Setenv("TL_REDIS_PASSWORD", "s3cret-Pa55")
	t.Setenv("TL_REDIS_WRONG", "not-the-password")

	err := provision(t, &Redis{Addresses: []string{addr}, Password: "{env.TL_REDIS_WRONG}"})
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	t.Log(err)
	for _, want := range []string{addr, "WRONGPASS", "check username and password"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "not-the-password") {
		t.Error("the error shows the password")
	}
	if err := provision(t, &Redis{Addresses: []string{addr}}); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("no password: %v", err)
	}
	if err := provision(t, &Redis{Addresses: []string{addr}, Password: "{env.TL_REDIS_NOPE_UNSET}"}); err == nil {
		t.Error("an unset password variable was accepted")
	}
	r := &Redis{Addresses: []string{addr}, Password: "{env.TL_REDIS_PASSWORD}"}
	if err := provision(t, r); err != nil {
		t.Fatalf("the right password from {env.*}: %v", err)
	}
	roundTrip(t, r)

	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("s3cret-Pa55\n"), 0o600)
	r = &Redis{Addresses: []string{addr}, Password: "{file." + pwFile + "}"}
	if err := provision(t, r); err != nil {
		t.Fatalf("the right password from {file.*}: %v", err)
	}
}

func TestProvisionUnreachable(t *testing.T) {
	addr := bench.FreeAddr(t) // nothing listens there
	err := provision(t, &Redis{Addresses: []string{addr}, DialTimeout: caddy.Duration(500e6)})
	if err == nil {
		t.Fatal("an unreachable Redis was accepted")
	}
	t.Log(err)
	for _, want := range []string{"storage redis: address " + addr, "connection refused", "check address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestProvisionBadDB(t *testing.T) {
	addr := startRedis(t)
	err := provision(t, &Redis{Addresses: []string{addr}, DB: 99})
	if err == nil || !strings.Contains(err.Error(), "check db") {
		t.Errorf("db 99 on a 16-db Redis: %v", err)
	}
	r := &Redis{Addresses: []string{addr}, DB: 3}
	if err := provision(t, r); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, r)
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		r    Redis
		want string // "" = valid
	}{
		{"defaults", Redis{}, ""},
		{"loopback names", Redis{Addresses: []string{"localhost:6379"}}, ""},
		{"ipv6 loopback", Redis{Addresses: []string{"[::1]:6379"}}, ""},
		{"remote plaintext", Redis{Addresses: []string{"10.0.0.5:6379"}}, `address "10.0.0.5:6379" is not a loopback address`},
		{"remote name plaintext", Redis{Addresses: []string{"redis.internal:6379"}}, "insecure_plaintext"},
		{"remote plaintext asked for", Redis{Addresses: []string{"10.0.0.5:6379"}, InsecurePlaintext: true}, ""},
		{"remote tls", Redis{Addresses: []string{"10.0.0.5:6379"}, TLS: &TLS{}}, ""},
		{"tls and plaintext", Redis{TLS: &TLS{}, InsecurePlaintext: true}, "exclusive"},
		{"no port", Redis{Addresses: []string{"127.0.0.1"}}, "want host:port"},
		{"negative db", Redis{DB: -1}, "db -1"},
		{"cluster db", Redis{Addresses: []string{"127.0.0.1:1", "127.0.0.1:2"}, DB: 2}, "only db 0"},
		{"short lock ttl", Redis{LockTTL: caddy.Duration(1e8)}, "lock_ttl 100ms"},
		{"brace prefix", Redis{KeyPrefix: "a}b"}, "key_prefix"},
		{"sentinel without master", Redis{Sentinel: &Sentinel{Addresses: []string{"127.0.0.1:26379"}}}, "master_name is required"},
		{"sentinel without addresses", Redis{Sentinel: &Sentinel{MasterName: "m"}}, "addresses of the Sentinels"},
		{"sentinel and address", Redis{Addresses: []string{"127.0.0.1:1"}, Sentinel: &Sentinel{MasterName: "m", Addresses: []string{"127.0.0.1:2"}}}, "exclusive"},
		{"remote sentinel plaintext", Redis{Sentinel: &Sentinel{MasterName: "m", Addresses: []string{"10.1.1.1:26379"}}}, "not a loopback"},
		{"encryption without key", Redis{Encryption: &Encryption{}}, "key_file or key_env"},
	}
	for _, c := range cases {
		err := c.r.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// tlsRedis starts a Redis that speaks TLS only (its plain port is bound to
// loopback for the bench's readiness check) and requires client
// certificates; it returns the TLS address and the files.
type tlsFixture struct {
	ca, other                 *testpki.CA
	client                    *testpki.Leaf
	dir                       string
	addr                      string
	caFile, otherCAFile       string
	clientCert, clientKey     string
	strangerCert, strangerKey string
}

func startTLSRedis(t *testing.T) tlsFixture {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "redis test CA")
	other := testpki.NewCA(t, "some other CA")
	srv := ca.Issue(t, testpki.CN("redis"), testpki.DNS("localhost", "redis.test"), testpki.IP("127.0.0.1"), testpki.ServerOnly())
	srvCert, srvKey := srv.WriteFiles(t, dir, "server")
	f := tlsFixture{
		ca: ca, other: other, dir: dir,
		caFile:      testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM()),
		otherCAFile: testpki.WriteFile(t, dir, "other.pem", other.CertPEM()),
	}
	f.client = ca.Issue(t, testpki.CN("caddy-node-1"), testpki.ClientOnly())
	f.clientCert, f.clientKey = f.client.WriteFiles(t, dir, "client")
	f.strangerCert, f.strangerKey = other.Issue(t, testpki.CN("stranger"), testpki.ClientOnly()).WriteFiles(t, dir, "stranger")
	f.addr = bench.FreeAddr(t)
	startRedis(t, "--tls-port", bench.Port(f.addr), "--tls-cert-file", srvCert, "--tls-key-file", srvKey,
		"--tls-ca-cert-file", f.caFile, "--tls-auth-clients", "yes")
	bench.WaitPort(t, f.addr, 10e9)
	return f
}

func TestTLSToRedis(t *testing.T) {
	f := startTLSRedis(t)
	t.Run("verified, with client certificate", func(t *testing.T) {
		r := &Redis{Addresses: []string{f.addr}, TLS: &TLS{CAFile: f.caFile, CertFile: f.clientCert, KeyFile: f.clientKey}}
		if err := provision(t, r); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, r)
	})
	t.Run("trust pool module", func(t *testing.T) {
		pool, _ := json.Marshal(map[string]any{"provider": "file", "pem_files": []string{f.caFile}})
		r := &Redis{Addresses: []string{"localhost:" + bench.Port(f.addr)}, TLS: &TLS{TrustPoolRaw: pool, CertFile: f.clientCert, KeyFile: f.clientKey}}
		if err := provision(t, r); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, r)
	})
	t.Run("suite keystore and truststore", func(t *testing.T) {
		// the client identity from a PKCS#12 keystore, Redis's CA from a
		// JKS truststore: this suite's own sources
		p12 := testpki.WriteFile(t, f.dir, "client.p12", testpki.PKCS12Keystore(t, f.client, "ks-pass", false))
		jks := testpki.WriteFile(t, f.dir, "trust.jks", testpki.JKSTruststore(t, map[string]*x509.Certificate{"redis-ca": f.ca.Cert}, "ts-pass"))
		t.Setenv("TL_KS_PASS", "ks-pass")
		r := &Redis{Addresses: []string{f.addr}, TLS: &TLS{
			TrustPoolRaw:      json.RawMessage(`{"provider":"truststore","path":` + strconvQuote(jks) + `,"password":"ts-pass"}`),
			ClientIdentityRaw: json.RawMessage(`{"source":"pkcs12","path":` + strconvQuote(p12) + `,"password":"{env.TL_KS_PASS}"}`),
		}}
		if err := provision(t, r); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, r)

		err := provision(t, &Redis{Addresses: []string{f.addr}, TLS: &TLS{
			CAFile:            f.caFile,
			ClientIdentityRaw: json.RawMessage(`{"source":"pkcs12","path":` + strconvQuote(p12) + `,"password":"wrong"}`),
		}})
		if err == nil || !strings.Contains(err.Error(), "client_identity") || !strings.Contains(err.Error(), p12) {
			t.Errorf("keystore with a wrong password: %v", err)
		}
		t.Log(err)
		err = provision(t, &Redis{Addresses: []string{f.addr}, TLS: &TLS{CAFile: f.caFile, ClientIdentityRaw: json.RawMessage(`{"source":"internal"}`)}})
		if err == nil || !strings.Contains(err.Error(), "client_identity internal cannot be used") {
			t.Errorf("internal client identity: %v", err)
		}
		err = provision(t, &Redis{Addresses: []string{f.addr}, TLS: &TLS{CAFile: f.caFile, CertFile: f.clientCert, KeyFile: f.clientKey,
			ClientIdentityRaw: json.RawMessage(`{"source":"pkcs12","path":` + strconvQuote(p12) + `}`)}})
		if err == nil || !strings.Contains(err.Error(), "exclusive") {
			t.Errorf("client_identity with cert_file: %v", err)
		}
	})
	t.Run("server name", func(t *testing.T) {
		r := &Redis{Addresses: []string{f.addr}, TLS: &TLS{CAFile: f.caFile, CertFile: f.clientCert, KeyFile: f.clientKey, ServerName: "redis.test"}}
		if err := provision(t, r); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, r)
	})
	bad := []struct {
		name string
		tls  *TLS
		want []string
	}{
		{"unknown CA", &TLS{CAFile: f.otherCAFile, CertFile: f.clientCert, KeyFile: f.clientKey},
			[]string{"TLS handshake with Redis at " + f.addr, "certificate signed by unknown authority", "check ca_file"}},
		{"system roots", &TLS{CertFile: f.clientCert, KeyFile: f.clientKey},
			[]string{"certificate signed by unknown authority"}},
		{"wrong server name", &TLS{CAFile: f.caFile, CertFile: f.clientCert, KeyFile: f.clientKey, ServerName: "db.example"},
			[]string{"db.example"}},
		{"no client certificate", &TLS{CAFile: f.caFile}, []string{f.addr, "client certificate: set client_identity, or cert_file and key_file"}},
		{"client certificate from another CA", &TLS{CAFile: f.caFile, CertFile: f.strangerCert, KeyFile: f.strangerKey}, []string{f.addr, "refused this node's client certificate"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			err := provision(t, &Redis{Addresses: []string{f.addr}, TLS: c.tls, DialTimeout: caddy.Duration(2e9)})
			if err == nil {
				t.Fatal("connected")
			}
			t.Log(err)
			for _, want := range c.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
	t.Run("plaintext to a TLS port", func(t *testing.T) {
		if err := provision(t, &Redis{Addresses: []string{f.addr}, DialTimeout: caddy.Duration(1e9), ReadTimeout: caddy.Duration(1e9)}); err == nil {
			t.Fatal("plaintext to a TLS-only port worked")
		}
	})
}

func TestTLSFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := testpki.WriteFile(t, dir, "x.pem", []byte("hello"))
	cases := []struct {
		tls  TLS
		want string
	}{
		{TLS{CAFile: filepath.Join(dir, "nope.pem")}, "ca_file"},
		{TLS{CAFile: notPEM}, "ca_file " + notPEM},
		{TLS{CertFile: notPEM}, "cert_file and key_file go together"},
		{TLS{CertFile: notPEM, KeyFile: notPEM}, "client identity cert_file " + notPEM},
		{TLS{CAFile: notPEM, TrustPoolRaw: json.RawMessage(`{"provider":"file"}`)}, "exclusive"},
	}
	for _, c := range cases {
		err := provision(t, &Redis{TLS: &c.tls})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.tls, err, c.want)
		}
	}
}
