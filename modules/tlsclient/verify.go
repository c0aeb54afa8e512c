package tlsclient

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/trustline/trustline/modules/verify"
)

// Pins are the identities a backend may hold (upstream_identity): exact
// SPIFFE IDs, whole trust domains (spiffe://td) and DNS names (wildcard
// certificates included, as in hostname verification). Parse them once,
// in Provision, with ParsePins; the backend must hold one of them.
type Pins struct {
	ids []spiffeid.ID
	tds []spiffeid.TrustDomain
	dns []string
}

func (p *Pins) empty() bool { return len(p.ids)+len(p.tds)+len(p.dns) == 0 }

// ParsePins parses upstream_identity values: spiffe://td/path,
// spiffe://td or a DNS name each. The error names the bad value.
func ParsePins(values []string) (Pins, error) {
	var p Pins
	for _, v := range values {
		switch {
		case strings.HasPrefix(strings.ToLower(v), "spiffe:"):
			id, err := spiffeid.FromString(v)
			if err != nil {
				return p, fmt.Errorf("upstream_identity %q: %w", v, err)
			}
			if id.Path() == "" {
				p.tds = append(p.tds, id.TrustDomain())
			} else {
				p.ids = append(p.ids, id)
			}
		case v == "" || strings.ContainsAny(v, " /:@,") || strings.Contains(v, "://"):
			return p, fmt.Errorf("upstream_identity %q: expected a SPIFFE ID (spiffe://trust.domain/path), a trust domain (spiffe://trust.domain) or a DNS name", v)
		default:
			p.dns = append(p.dns, strings.ToLower(strings.TrimSuffix(v, ".")))
		}
	}
	return p, nil
}

// match checks that the verified leaf holds one of the pinned identities.
func (p *Pins) match(leaf *x509.Certificate) error {
	var has []string
	if len(p.ids)+len(p.tds) > 0 {
		id, err := x509svid.IDFromCert(leaf)
		switch {
		case err != nil:
			has = append(has, fmt.Sprintf("no SPIFFE ID (%v)", err))
		case slices.Contains(p.ids, id) || slices.ContainsFunc(p.tds, id.MemberOf):
			return nil
		default:
			has = append(has, fmt.Sprintf("SPIFFE ID %s", id))
		}
	}
	if slices.ContainsFunc(p.dns, func(name string) bool { return leaf.VerifyHostname(name) == nil }) {
		return nil
	}
	if len(leaf.DNSNames) > 0 {
		has = append(has, "DNS names "+strings.Join(leaf.DNSNames, ", "))
	}
	if len(has) == 0 {
		has = append(has, "no SAN")
	}
	return fmt.Errorf("backend certificate %q holds %s, none of upstream_identity %s", leaf.Subject, strings.Join(has, "; "), p)
}

// String lists the pins, for logs.
func (p *Pins) String() string {
	var all []string
	for _, id := range p.ids {
		all = append(all, id.String())
	}
	for _, td := range p.tds {
		all = append(all, td.IDString())
	}
	all = append(all, p.dns...)
	return "[" + strings.Join(all, ", ") + "]"
}

// Verify checks the backend's certificate in cs against the trust pool
// current now (it runs in VerifyConnection, crypto/tls's own verification
// being off): the chain must lead to the pool, with the serverAuth usage.
// With pins (upstream_identity) the verified leaf must hold one of them,
// and they stand in for the server name; otherwise the certificate must
// be valid for serverName. A failure wraps a classified reason (Classify).
func (l *Client) Verify(cs tls.ConnectionState, serverName string) error {
	if l.insecure {
		return nil
	}
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return &verifyError{ReasonNoCertificate, errors.New("the backend sent no certificate")}
	}
	anchors := verify.PoolAnchors(l.roots) // static: nil means the system roots
	if src, ok := l.Pool.(verify.AnchorSource); ok {
		anchors = src.CurrentAnchors()
	} else if l.Pool != nil {
		anchors = verify.PoolAnchors(l.Pool.CertPool())
	}
	if anchors == nil || (l.Pool != nil && anchors.CertPool() == nil) {
		// a live pool that holds nothing: fail closed
		return &verifyError{ReasonUnknownAuthority, errors.New("the trust pool holds no certificate")}
	}
	if l.Pins.empty() {
		if serverName == "" {
			return &verifyError{ReasonNoServerName, errors.New("no server name to verify the backend's certificate against: set tls_server_name or upstream_identity")}
		}
		if err := certs[0].VerifyHostname(serverName); err != nil {
			return &verifyError{ReasonNameMismatch, &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}}
		}
	}
	// an authority of a SPIFFE bundle vouches for its own trust domain's
	// SVIDs only: a federated partner's CA cannot stand in for our backend
	if _, _, err := anchors.Verify(certs[0], certs[1:], x509.ExtKeyUsageServerAuth, time.Now()); err != nil {
		reason := cmp.Or(verify.ReasonOf(err), ReasonOther)
		return &verifyError{reason, &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}}
	}
	if !l.Pins.empty() {
		if err := l.Pins.match(certs[0]); err != nil {
			return &verifyError{ReasonIdentityMismatch, err}
		}
	}
	return nil
}
