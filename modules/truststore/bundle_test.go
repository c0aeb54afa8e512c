package truststore

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

// TestBundleGivenAStore: a JKS or PKCS#12 store given to bundle (which
// reads PEM) is refused with the source that reads it, as a keystore
// given as a truststore is (issue 22).
func TestBundleGivenAStore(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "store ca")
	for name, data := range map[string][]byte{
		"trust.jks": testpki.JKSTruststore(t, map[string]*x509.Certificate{"ca": ca.Cert}, "pw"),
		"trust.p12": testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "pw", false),
	} {
		file := testpki.WriteFile(t, dir, name, data)
		kind := "a JKS store"
		if strings.HasSuffix(name, ".p12") {
			kind = "a PKCS#12 store"
		}
		want := file + ": " + kind + " (a keystore or truststore), not PEM: bundle reads PEM certificates; for a truststore use `truststore " + file + " { password ... }`"
		err := (&Bundle{Paths: []string{file}}).Provision(poolCtx(t))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error\n%v\nwant one containing\n%s", name, err, want)
		}
	}
}
