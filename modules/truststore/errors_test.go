package truststore

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/material"
)

// TestLoadErrors: a broken store fails Provision with one message in
// which each layer says what only it knows, once: the source and its file
// ("loading truststore %q"), the format the reader detected, the reason
// (the keytool hint where there is one). The same reason, without the
// first part, is what a failed reload logs beside kind and source.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "errors ca")
	leaf := ca.Issue(t, testpki.CN("leaf"))
	p12 := testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "pw", false)
	jks := testpki.JKSTruststore(t, map[string]*x509.Certificate{"ca": ca.Cert}, "pw")
	w := func(name string, data []byte) string { return testpki.WriteFile(t, dir, name, data) }
	p12File, p12Short := w("trust.p12", p12), w("short.p12", p12[:len(p12)/2])
	jksFile, jksShort := w("trust.jks", jks), w("short.jks", jks[:len(jks)/2])
	keyP12 := w("key.p12", testpki.PKCS12Keystore(t, leaf, "pw", false))
	leafPEM := w("leaf.pem", leaf.CertPEM())
	missing := filepath.Join(dir, "missing.p12")

	for _, tc := range []struct {
		name     string
		path, pw string
		want     string
	}{
		{name: "pkcs12 wrong password", path: p12File, pw: "nope",
			want: `loading truststore "` + p12File + `": pkcs12: wrong password or corrupt store (integrity check failed)`},
		{name: "pkcs12 malformed", path: p12Short, pw: "pw",
			want: `loading truststore "` + p12Short + `": pkcs12: error reading P12 data: asn1: syntax error: data truncated`},
		{name: "jks wrong password", path: jksFile, pw: "nope",
			want: `loading truststore "` + jksFile + `": jks: wrong password or corrupt store (integrity check failed)`},
		{name: "jks malformed", path: jksShort, pw: "pw",
			want: `loading truststore "` + jksShort + `": jks: entry 1: certificate cut short: the store is truncated or corrupt`},
		{name: "pkcs12 keystore", path: keyP12, pw: "pw",
			want: `loading truststore "` + keyP12 + "\": pkcs12: the store holds a private key, not trusted-certificate entries: use it as a keystore, or export its CA with `keytool -exportcert`"},
		{name: "leaf", path: leafPEM,
			want: `loading truststore "` + leafPEM + `": certificate "CN=leaf" (serial ` + material.SerialString(leaf.Cert) + `) is not a CA certificate`},
		{name: "missing", path: missing, pw: "pw",
			want: `loading truststore "` + missing + `": open: no such file or directory`},
		{name: "password placeholder", path: p12File, pw: "{env.TL_NO_SUCH_VAR_ERRORS}",
			want: `loading truststore "` + p12File + `": password: {env.TL_NO_SUCH_VAR_ERRORS} is empty or unset`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := (&TrustStore{Path: tc.path, Password: tc.pw}).Provision(poolCtx(t))
			if err == nil || !matches(err.Error(), tc.want) {
				t.Fatalf("error\n%v\nwant\n%s", err, tc.want)
			}
		})
	}

	t.Run("bundle", func(t *testing.T) {
		want := `loading bundle "` + leafPEM + `": ` + leafPEM + `: certificate "CN=leaf" (serial ` + material.SerialString(leaf.Cert) + `) is not a CA certificate`
		err := (&Bundle{Paths: []string{leafPEM}}).Provision(poolCtx(t))
		if err == nil || err.Error() != want {
			t.Fatalf("error\n%v\nwant\n%s", err, want)
		}
	})
	t.Run("spiffe_bundle", func(t *testing.T) {
		file := w("bundle.json", []byte(`{"keys":[]}`))
		want := `loading spiffe_bundle: trust domain example.org: the bundle has no X.509 authorities`
		err := (&SPIFFEBundle{Bundles: []SPIFFEBundleSource{{TrustDomain: "example.org", File: file}}}).Provision(poolCtx(t))
		if err == nil || err.Error() != want {
			t.Fatalf("error\n%v\nwant\n%s", err, want)
		}
	})
}

// matches compares an error with want, in which … stands for any text
// (a library's byte counts).
func matches(got, want string) bool {
	before, after, wild := strings.Cut(want, "…")
	if !wild {
		return got == want
	}
	return len(got) >= len(before)+len(after) && strings.HasPrefix(got, before) && strings.HasSuffix(got, after)
}
