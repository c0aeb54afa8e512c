package material

import (
	"crypto/x509"
	"strings"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/trustline/trustline/internal/testpki"
)

func TestReadTrustAnchors(t *testing.T) {
	root := testpki.NewCA(t, "root")
	other := testpki.NewCA(t, "other")
	leaf := root.Issue(t, testpki.DNS("a.test"))
	certs := []*x509.Certificate{root.Cert, other.Cert}

	for _, tc := range []struct {
		name    string
		data    []byte
		opts    StoreOptions
		want    int
		wantErr string
	}{
		{"pem bundle", append(root.CertPEM(), other.CertPEM()...), StoreOptions{}, 2, ""},
		{"pem with a key block", append(leaf.KeyPEM(), root.CertPEM()...), StoreOptions{}, 1, ""},
		{"pkcs12 modern", testpki.PKCS12Truststore(t, certs, "pw", false), StoreOptions{Password: "pw"}, 2, ""},
		{"pkcs12 legacy", testpki.PKCS12Truststore(t, certs, "pw", true), StoreOptions{Password: "pw"}, 2, ""},
		{"pkcs12 wrong password", testpki.PKCS12Truststore(t, certs, "pw", false), StoreOptions{Password: "nope"}, 0, "wrong password"},
		{"pkcs12 keystore as truststore", testpki.PKCS12Keystore(t, leaf, "pw", false), StoreOptions{Password: "pw"}, 0, "holds a private key"},
		{"jks", testpki.JKSTruststore(t, map[string]*x509.Certificate{"root": root.Cert, "other": other.Cert}, "changeit"), StoreOptions{Password: "changeit"}, 2, ""},
		{"jks alias", testpki.JKSTruststore(t, map[string]*x509.Certificate{"root": root.Cert, "other": other.Cert}, "changeit"), StoreOptions{Password: "changeit", Aliases: []string{"ROOT"}}, 1, ""},
		{"jks unknown alias", testpki.JKSTruststore(t, map[string]*x509.Certificate{"root": root.Cert}, "changeit"), StoreOptions{Password: "changeit", Aliases: []string{"x"}}, 0, `alias "x" not in the store`},
		{"jks wrong password", testpki.JKSTruststore(t, map[string]*x509.Certificate{"root": root.Cert}, "changeit"), StoreOptions{Password: "nope"}, 0, "wrong password"},
		{"jks no password", testpki.JKSTruststore(t, map[string]*x509.Certificate{"root": root.Cert}, "changeit"), StoreOptions{}, 0, "needs its password"},
		{"jks only keys", testpki.JKSKeystore(t, "me", leaf, "changeit", "changeit"), StoreOptions{Password: "changeit"}, 0, "only private-key entries"},
		{"empty", []byte("  \n"), StoreOptions{}, 0, "empty"},
		{"garbage", []byte("hello"), StoreOptions{}, 0, "unrecognised format"},
		{"pem without certificates", leaf.KeyPEM(), StoreOptions{}, 0, "no CERTIFICATE"},
		{"truncated pkcs12", testpki.PKCS12Truststore(t, certs, "pw", false)[:100], StoreOptions{Password: "pw"}, 0, "pkcs12"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadTrustAnchors(tc.data, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Fatalf("%d certificates, want %d", len(got), tc.want)
			}
		})
	}
}

func TestReadKeyStore(t *testing.T) {
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "inter")
	leaf := inter.Issue(t, testpki.CN("me"))
	other := root.Issue(t, testpki.CN("other"))

	for _, tc := range []struct {
		name    string
		data    []byte
		opts    StoreOptions
		wantErr string
	}{
		{"pkcs12 modern", testpki.PKCS12Keystore(t, leaf, "pw", false), StoreOptions{Password: "pw"}, ""},
		{"pkcs12 legacy", testpki.PKCS12Keystore(t, leaf, "pw", true), StoreOptions{Password: "pw"}, ""},
		{"pkcs12 wrong password", testpki.PKCS12Keystore(t, leaf, "pw", false), StoreOptions{Password: "x"}, "wrong password"},
		{"pkcs12 truststore as keystore", testpki.PKCS12Truststore(t, []*x509.Certificate{root.Cert}, "pw", false), StoreOptions{Password: "pw"}, "no private key"},
		{"jks", testpki.JKSKeystore(t, "me", leaf, "storepw", "keypw"), StoreOptions{Password: "storepw", KeyPassword: "keypw"}, ""},
		{"jks alias", testpki.JKSKeystore(t, "me", leaf, "storepw", "storepw"), StoreOptions{Password: "storepw", Aliases: []string{"me"}}, ""},
		{"jks wrong key password", testpki.JKSKeystore(t, "me", leaf, "storepw", "keypw"), StoreOptions{Password: "storepw", KeyPassword: "bad"}, "key password"},
		{"jks wrong alias", testpki.JKSKeystore(t, "me", leaf, "storepw", "storepw"), StoreOptions{Password: "storepw", Aliases: []string{"you"}}, `no private-key entry "you"`},
		{"pem is not a keystore", leaf.CertPEM(), StoreOptions{}, "separate certificate and key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadKeyStore(tc.data, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Leaf.Subject.CommonName != "me" || len(got.Certificate) != 2 {
				t.Fatalf("leaf %q with %d certificates; want me with its intermediate", got.Leaf.Subject.CommonName, len(got.Certificate))
			}
		})
	}
	if _, err := NewKeyPair(other.Key, []*x509.Certificate{leaf.Cert}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched key: %v", err)
	}
	if _, err := ReadTrustAnchors([]byte{0xCE, 0xCE, 0xCE, 0xCE, 1}, StoreOptions{}); err == nil || !strings.Contains(err.Error(), "JCEKS") {
		t.Fatalf("JCEKS: %v", err)
	}
}

func FuzzReadTrustAnchors(f *testing.F) {
	root := testpki.NewCA(f, "root")
	f.Add(root.CertPEM(), "")
	f.Add(testpki.PKCS12Truststore(f, []*x509.Certificate{root.Cert}, "pw", false), "pw")
	f.Add(testpki.JKSTruststore(f, map[string]*x509.Certificate{"a": root.Cert}, "changeit"), "changeit")
	// above the iteration cap (refused before any derivation)
	capped, err := pkcs12.Modern2023.WithIterations(65536).EncodeTrustStore([]*x509.Certificate{root.Cert}, "pw")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(replaceNth(capped, cheapCount, hugeCount, 0), "pw")
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		certs, err := ReadTrustAnchors(data, StoreOptions{Password: password})
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificates")
		}
	})
}
