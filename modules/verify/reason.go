package verify

import (
	"crypto/x509"
	"errors"
	"time"
)

// The reasons a chain is refused: one vocabulary, low cardinality (never
// a value the peer chose), for the `reason` field of refusal logs, the
// `reason` label of the refusal metrics and `caddy trustline explain`.
const (
	ReasonNoCertificate     = "no_certificate"     // the peer sent none
	ReasonMalformed         = "malformed"          // a certificate does not parse
	ReasonUnknownAuthority  = "unknown_authority"  // no chain to the pool (issuer unknown, or an intermediate not sent)
	ReasonExpired           = "expired"            // a certificate of the chain has expired
	ReasonNotYetValid       = "not_yet_valid"      // a certificate of the chain is not valid yet
	ReasonBadUsage          = "bad_usage"          // no clientAuth (serverAuth) extended key usage
	ReasonNameMismatch      = "name_mismatch"      // a server certificate not valid for the name dialed
	ReasonTrustDomain       = "trust_domain"       // a SPIFFE authority vouching outside its own trust domain, or for a leaf that is no X509-SVID
	ReasonRevoked           = "revoked"            // a CRL or OCSP answer revokes a certificate of the chain
	ReasonRevocationUnknown = "revocation_unknown" // no usable CRL or OCSP answer, and revocation is hard-fail
	ReasonNotAllowed        = "not_allowed"        // the identity matches no allowed pattern
	ReasonNoPool            = "no_pool"            // the trust pool has no current version
	ReasonUnverified        = "unverified"         // nothing verified the chain (no trust_pool, and no live_trust before `verifier peer`)
	ReasonOther             = "other"
)

// Refusal is a refused chain: the reason class and the error that says
// what exactly is wrong.
type Refusal struct {
	// Reason is one of the Reason constants.
	Reason string
	Err    error
}

func (r *Refusal) Error() string { return r.Err.Error() }
func (r *Refusal) Unwrap() error { return r.Err }

// refuse wraps err with its reason.
func refuse(reason string, err error) *Refusal { return &Refusal{Reason: reason, Err: err} }

// ReasonOf is the reason class of err: a Refusal's own, or that of a
// chain verification error of crypto/x509; "" when err is not a refusal
// of a chain.
func ReasonOf(err error) string {
	if err == nil {
		return ""
	}
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return ReasonUnknownAuthority
	}
	var hn x509.HostnameError
	if errors.As(err, &hn) {
		return ReasonNameMismatch
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		switch ci.Reason {
		case x509.Expired:
			if ci.Cert != nil && time.Now().Before(ci.Cert.NotBefore) {
				return ReasonNotYetValid
			}
			return ReasonExpired
		case x509.IncompatibleUsage:
			return ReasonBadUsage
		}
		return ReasonUnknownAuthority // no acceptable chain (constraints, path length...)
	}
	return ""
}
