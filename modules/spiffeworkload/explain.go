package spiffeworkload

import (
	"crypto/x509"

	"github.com/trustline/trustline/modules/verify"
)

// AnchorOrigin says where an anchor of the pool comes from, for explain:
// the Workload API socket and the trust domain whose bundle lists it
// (with anchor nil, the source itself). It implements
// verify.OriginTeller.
func (p *Pool) AnchorOrigin(anchor *x509.Certificate) string {
	out := "spiffe_workload " + p.addr
	if anchor == nil {
		return out
	}
	if td := verify.AnchorDomain(anchor); td != "" {
		out += ", bundle of trust domain " + td
	}
	return out
}
