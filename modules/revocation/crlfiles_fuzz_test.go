package revocation

import (
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// FuzzParseCRLFile feeds CRL files (PEM or DER, outside input) through the
// parser the watcher uses, then through a successor check against a good
// CRL of the same CA and a revocation lookup. Nothing may panic; a file
// that parses holds at least one CRL.
func FuzzParseCRLFile(f *testing.F) {
	ca := testpki.NewCA(f, "root")
	leaf := ca.Issue(f, testpki.CN("alice"))
	der := revocationtest.CRL(f, ca, time.Now().Add(time.Hour), leaf.Cert)
	f.Add(der)
	f.Add(revocationtest.PEM(der, revocationtest.CRL(f, ca, time.Now().Add(time.Hour))))
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	good, err := parseCRLFile("good", revocationtest.PEM(der), time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseCRLFile("fuzz", data, time.Now())
		if err != nil {
			return
		}
		if len(entries) == 0 {
			t.Fatal("no error and no CRL")
		}
		_ = checkSuccessor("fuzz", good, entries)
		for _, e := range entries {
			e.isRevoked(leaf.Cert.SerialNumber)
		}
	})
}
