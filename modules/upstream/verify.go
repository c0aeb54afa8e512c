package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// pins are the identities a backend may hold (upstream_identity): exact
// SPIFFE IDs, whole trust domains (spiffe://td) and DNS names (wildcard
// certificates included, as in hostname verification). They are parsed
// once in Provision; the backend must hold one of them.
type pins struct {
	ids []spiffeid.ID
	tds []spiffeid.TrustDomain
	dns []string
}

func (p *pins) empty() bool { return len(p.ids)+len(p.tds)+len(p.dns) == 0 }

// parsePins parses upstream_identity values.
func parsePins(values []string) (pins, error) {
	var p pins
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
func (p *pins) match(leaf *x509.Certificate) error {
	var spiffeErr error
	if len(p.ids)+len(p.tds) > 0 {
		id, err := x509svid.IDFromCert(leaf)
		if err == nil {
			for _, want := range p.ids {
				if id == want {
					return nil
				}
			}
			for _, td := range p.tds {
				if id.MemberOf(td) {
					return nil
				}
			}
			spiffeErr = fmt.Errorf("SPIFFE ID %s", id)
		} else {
			spiffeErr = fmt.Errorf("no SPIFFE ID (%v)", err)
		}
	}
	for _, name := range p.dns {
		if leaf.VerifyHostname(name) == nil {
			return nil
		}
	}
	has := []string{}
	if spiffeErr != nil {
		has = append(has, spiffeErr.Error())
	}
	if len(leaf.DNSNames) > 0 {
		has = append(has, "DNS names "+strings.Join(leaf.DNSNames, ", "))
	}
	if len(has) == 0 {
		has = append(has, "no SAN")
	}
	return fmt.Errorf("backend certificate %q holds %s, none of upstream_identity %s", leaf.Subject, strings.Join(has, "; "), p)
}

func (p *pins) String() string {
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

// verifier checks a backend's certificate against the trust pool current
// at the handshake.
type verifier struct {
	// roots returns the pool to verify against: nil means the system
	// roots; ok false means a live pool that has nothing (fail closed).
	roots    func() (pool *x509.CertPool, ok bool)
	pins     pins
	insecure bool
}

// verify runs in VerifyConnection (crypto/tls's own verification is off).
// With upstream_identity, the pinned identities stand in for the server
// name; otherwise the certificate must be valid for serverName.
func (v *verifier) verify(cs tls.ConnectionState, serverName string) error {
	if v.insecure {
		return nil
	}
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return &verifyError{ReasonNoCertificate, errors.New("the backend sent no certificate")}
	}
	roots, ok := v.roots()
	if !ok {
		return &verifyError{ReasonUnknownAuthority, errors.New("the trust pool holds no certificate")}
	}
	opts := x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: time.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if v.pins.empty() {
		if serverName == "" {
			return &verifyError{ReasonNoServerName, errors.New("no server name to verify the backend's certificate against: set tls_server_name or upstream_identity")}
		}
		opts.DNSName = serverName
	}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := certs[0].Verify(opts); err != nil {
		reason := x509Reason(err)
		if reason == "" {
			reason = ReasonOther
		}
		return &verifyError{reason, &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}}
	}
	if !v.pins.empty() {
		if err := v.pins.match(certs[0]); err != nil {
			return &verifyError{ReasonIdentityMismatch, err}
		}
	}
	return nil
}
