package verify

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/modules/material"
)

// ScopeError says why a verified chain whose anchor is a SPIFFE authority
// does not vouch for its leaf.
type ScopeError struct {
	// AnchorDomain is the trust domain of the chain's anchor.
	AnchorDomain spiffeid.TrustDomain
	// Reason says what is wrong with the leaf.
	Reason string
}

func (e *ScopeError) Error() string {
	return fmt.Sprintf("the chain leads to a SPIFFE authority of trust domain %s, %s", e.AnchorDomain.Name(), e.Reason)
}

// Scope picks, among chains crypto/tls verified against a flat pool (leaf
// first, anchor last), the first whose anchor may vouch for the leaf (a
// plain CA: any leaf; a SPIFFE authority: an X509-SVID of its own trust
// domain), and returns it with that trust domain ("" for a plain CA). The
// error is a *Refusal.
func Scope(chains [][]*x509.Certificate, usage x509.ExtKeyUsage) ([]*x509.Certificate, string, error) {
	var first error
	for _, chain := range chains {
		if len(chain) == 0 {
			continue
		}
		td, spiffe := authorityDomain(chain[len(chain)-1])
		if !spiffe {
			return chain, "", nil
		}
		id, err := SVID(chain[0], usage)
		if err == nil && td != conflicting && id.TrustDomain() == td {
			return chain, td.Name(), nil
		}
		if first == nil {
			first = refuse(ReasonTrustDomain, &ScopeError{AnchorDomain: td, Reason: scopeReason(chain[0], td, err)})
		}
	}
	if first == nil {
		return nil, "", refuse(ReasonUnknownAuthority, errors.New("no verified chain"))
	}
	return nil, "", first
}

// scopeReason says why an authority of td does not vouch for leaf, whose
// SVID check gave err.
func scopeReason(leaf *x509.Certificate, td spiffeid.TrustDomain, err error) string {
	switch id, idErr := SVID(leaf, x509.ExtKeyUsageAny); {
	case td == conflicting:
		return "which two trust domains claim"
	case idErr != nil:
		return "but the leaf is no X509-SVID (" + idErr.Error() + ")"
	case id.TrustDomain() != td:
		return "but the leaf's SPIFFE ID " + id.String() + " is of trust domain " + id.TrustDomain().Name() + ": an authority vouches only for its own trust domain"
	case err != nil:
		return "but the leaf is no X509-SVID (" + err.Error() + ")"
	default:
		return "but the leaf does not verify under it"
	}
}

// certName names a certificate in errors and logs: its subject and its
// serial in hex.
func certName(c *x509.Certificate) string {
	return fmt.Sprintf("%q (serial %s)", c.Subject.String(), material.SerialString(c))
}
