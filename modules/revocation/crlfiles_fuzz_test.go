package revocation

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// FuzzParseCRLFile feeds CRL files (PEM or DER, outside input) through the
// parser the watcher uses, then offers them to a line holding a good CRL
// of the same CA (the successor rule) and looks a certificate up. Nothing
// may panic; a file that parses holds at least one CRL; whatever the rule
// decides, the line still holds a CRL the CA signed.
func FuzzParseCRLFile(f *testing.F) {
	ca := testpki.NewCA(f, "root")
	leaf := ca.Issue(f, testpki.CN("alice"))
	der := revocationtest.CRL(f, ca, time.Now().Add(time.Hour), leaf.Cert)
	f.Add(der)
	f.Add(revocationtest.PEM(der, revocationtest.CRL(f, ca, time.Now().Add(time.Hour))))
	f.Add(revocationtest.BadSignature(revocationtest.CRL(f, ca, time.Now().Add(time.Hour))))
	f.Add(revocationtest.CRLOf(f, ca, nil, time.Now(), time.Now().Add(time.Hour)))
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseCRLFile("fuzz", data)
		if err != nil {
			return
		}
		if len(entries) == 0 {
			t.Fatal("no error and no CRL")
		}
		good, err := parseCRLFile("good", der)
		if err != nil {
			t.Fatal(err)
		}
		l := newCRLLine("file", "fuzz", zap.NewNop())
		if r := l.offer(good, ca.Cert); r != nil {
			t.Fatalf("the good CRL refused: %v", r)
		}
		_ = l.offer(entries, nil)
		signed := false
		for _, e := range l.inForce(ca.Cert) {
			e.isRevoked(leaf.Cert.SerialNumber)
			signed = signed || e.signedBy(ca.Cert) == nil
		}
		if !signed {
			t.Fatal("the line holds no CRL signed by its issuer")
		}
	})
}
