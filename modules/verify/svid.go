package verify

import (
	"crypto/x509"
	"errors"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SVID checks leaf against the X509-SVID specification (go-spiffe's leaf
// rules, plus the required digitalSignature key usage) for usage
// (ExtKeyUsageAny: none), and returns its SPIFFE ID: the suite's one SVID
// leaf rule, for trust decisions, peer identities and backends alike.
func SVID(leaf *x509.Certificate, usage x509.ExtKeyUsage) (spiffeid.ID, error) {
	id, err := x509svid.IDFromCert(leaf)
	switch {
	case err != nil:
		return id, errors.New("not a SPIFFE ID: " + err.Error())
	case id.Path() == "":
		return id, errors.New("not a SPIFFE ID: " + id.String() + " has no path (it names the trust domain, not a workload)")
	case leaf.IsCA:
		return id, errors.New("not an X509-SVID: the certificate is a CA")
	case leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return id, errors.New("not an X509-SVID: key usage lacks digitalSignature")
	case leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return id, errors.New("not an X509-SVID: key usage includes keyCertSign or cRLSign")
	}
	if usage != x509.ExtKeyUsageAny && (len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0) &&
		!slices.Contains(leaf.ExtKeyUsage, usage) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		role, name := "server", "serverAuth"
		if usage == x509.ExtKeyUsageClientAuth {
			role, name = "client", "clientAuth"
		}
		return id, refuse(ReasonBadUsage, errors.New("not a "+role+" X509-SVID: extended key usage lacks "+name))
	}
	return id, nil
}
