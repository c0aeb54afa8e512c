package keystore

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

// TestStoreLoadErrors: a broken PKCS#12 or JKS keystore fails Provision
// with one message in which each layer says what only it knows, once:
// the keystore and its file, the format the reader detected, the reason.
func TestStoreLoadErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "errors ca")
	leaf := ca.Issue(t, testpki.CN("proxy"))
	p12 := testpki.PKCS12Keystore(t, leaf, "pw", false)
	jks := testpki.JKSKeystore(t, "proxy", leaf, "pw", "pw")
	w := func(name string, data []byte) string { return testpki.WriteFile(t, dir, name, data) }
	p12File, p12Short := w("id.p12", p12), w("short.p12", p12[:len(p12)/2])
	jksFile, jksShort := w("id.jks", jks), w("short.jks", jks[:len(jks)/2])
	trustP12 := w("trust.p12", testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "pw", false))
	ctx := testCtx(t)

	for _, tc := range []struct {
		name     string
		kind     string
		path, pw string
		want     string
	}{
		{"pkcs12 wrong password", "pkcs12", p12File, "nope",
			`loading keystore "` + p12File + `": pkcs12: wrong password or corrupt store (integrity check failed)`},
		{"pkcs12 malformed", "pkcs12", p12Short, "pw",
			`loading keystore "` + p12Short + `": pkcs12: error reading P12 data: asn1: syntax error: data truncated`},
		{"pkcs12 truststore", "pkcs12", trustP12, "pw",
			`loading keystore "` + trustP12 + `": pkcs12: no private key in the store (a truststore?)`},
		{"jks wrong password", "jks", jksFile, "nope",
			`loading keystore "` + jksFile + `": jks: wrong password or corrupt store (integrity check failed)`},
		{"jks malformed", "jks", jksShort, "pw",
			`loading keystore "` + jksShort + `": jks: entry 1: certificate 1 of 1 cut short: the store is truncated or corrupt`},
		{"jks source, pkcs12 file", "jks", p12File, "nope",
			`loading keystore "` + p12File + `": pkcs12: wrong password or corrupt store (integrity check failed)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.kind == "pkcs12" {
				err = (&PKCS12{Path: tc.path, Password: tc.pw}).Provision(ctx)
			} else {
				err = (&JKS{Path: tc.path, Password: tc.pw}).Provision(ctx)
			}
			if err == nil || !matches(err.Error(), tc.want) {
				t.Fatalf("error\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
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
