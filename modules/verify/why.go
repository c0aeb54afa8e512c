package verify

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/trustline/trustline/modules/material"
)

// ChainStep says in words, for an explain trace, the chain verdict a
// verifier reached (the chain and its anchor's trust domain, or err),
// naming the certificate at fault: leaf and inters are what the client
// sent, anchors the pool's (nil when unlisted), origin (or nil) says
// which source and file holds an anchor.
func ChainStep(name string, leaf *x509.Certificate, inters, anchors []*x509.Certificate, origin func(*x509.Certificate) string, chain []*x509.Certificate, td string, err error, now time.Time) Step {
	s := Step{Stage: "chain", Name: name}
	if err == nil {
		s.Verdict = VerdictAdmitted
		s.Chain = DescribeCerts(chain)
		if origin != nil && len(chain) > 0 {
			s.Chain[len(s.Chain)-1].Source = origin(chain[len(chain)-1])
		}
		s.Detail = fmt.Sprintf("chain of %d built to the anchor %q", len(chain), chain[len(chain)-1].Subject.String())
		if td != "" {
			s.Detail += " of SPIFFE trust domain " + td + " (the leaf's own)"
		}
		return s
	}
	s.Verdict, s.Reason = VerdictRefused, cmp.Or(ReasonOf(err), ReasonOther)
	switch s.Reason {
	case ReasonUnknownAuthority:
		s.Detail = whyNoChain(leaf, inters, anchors, err)
		s.Anchors = DescribeCerts(anchors)
		if origin != nil {
			for i, a := range anchors {
				s.Anchors[i].Source = origin(a)
			}
		}
	case ReasonExpired, ReasonNotYetValid:
		s.Detail = whyInvalid(leaf, err, now)
	case ReasonBadUsage:
		s.Detail = whyUsage(leaf, err)
	default:
		s.Detail = err.Error()
	}
	return s
}

// whyNoChain says why no chain leads from leaf to the pool: walking up
// from the leaf through the certificates the client sent, the first
// certificate whose issuer the client did not send and the pool does not
// hold.
func whyNoChain(leaf *x509.Certificate, inters, anchors []*x509.Certificate, err error) string {
	last, seen := leaf, map[*x509.Certificate]bool{leaf: true}
	for {
		next := issuerAmong(last, inters)
		if next == nil || seen[next] {
			break
		}
		seen[next], last = true, next
	}
	issuer := fmt.Sprintf("%q", last.Issuer.String())
	if aki := keyID(last.AuthorityKeyId); aki != "" {
		issuer += " (authority key ID " + aki + ")"
	}
	for _, a := range anchors {
		if bytes.Equal(a.RawSubject, last.RawIssuer) {
			// the name is there: another key, or a constraint
			return fmt.Sprintf("the pool holds an anchor named %s, but it did not verify %s: %v", issuer, certName(last), err)
		}
	}
	var s string
	switch {
	case last == leaf && len(inters) == 0:
		s = fmt.Sprintf("intermediate not sent: the leaf's issuer %s is not an anchor of the pool, and the client sent no certificate but its own. "+
			"If %q is an intermediate CA under one of the anchors, the client must send it after its certificate (append it to the client's certificate file); "+
			"otherwise that issuer is unknown to this pool", issuer, last.Issuer.String())
	case last == leaf:
		s = fmt.Sprintf("issuer unknown: the leaf's issuer %s is neither an anchor of the pool nor among the %d certificate(s) the client sent after its own (they do not issue it)", issuer, len(inters))
	default:
		s = fmt.Sprintf("issuer unknown: the last certificate the client sent, %s, was issued by %s, which is not an anchor of the pool", certName(last), issuer)
	}
	if len(anchors) > 0 {
		s += fmt.Sprintf("; the pool's %d anchor(s) are listed below", len(anchors))
	}
	return s
}

// issuerAmong returns the certificate of certs that issued c (by name,
// and by key ID when both carry one), or nil.
func issuerAmong(c *x509.Certificate, certs []*x509.Certificate) *x509.Certificate {
	for _, p := range certs {
		if !bytes.Equal(p.RawSubject, c.RawIssuer) {
			continue
		}
		if len(c.AuthorityKeyId) > 0 && len(p.SubjectKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, p.SubjectKeyId) {
			continue
		}
		return p
	}
	return nil
}

// atFault is the certificate a crypto/x509 error names, else leaf.
func atFault(leaf *x509.Certificate, err error) *x509.Certificate {
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) && ci.Cert != nil {
		return ci.Cert
	}
	return leaf
}

// whyInvalid names the certificate outside its validity period.
func whyInvalid(leaf *x509.Certificate, err error, now time.Time) string {
	c := atFault(leaf, err)
	role := "the leaf"
	if c != leaf {
		role = "an intermediate"
	}
	if now.Before(c.NotBefore) {
		return fmt.Sprintf("%s %s is not valid yet: valid from %s (now %s)", role, certName(c), material.TimeString(c.NotBefore), material.TimeString(now))
	}
	if now.After(c.NotAfter) {
		return fmt.Sprintf("%s %s expired at %s (now %s)", role, certName(c), material.TimeString(c.NotAfter), material.TimeString(now))
	}
	return err.Error()
}

// whyUsage names the extended key usages of the certificate that lacks
// clientAuth (or serverAuth).
func whyUsage(leaf *x509.Certificate, err error) string {
	c := atFault(leaf, err)
	return fmt.Sprintf("%s allows the extended key usages [%s], without the one the connection needs (clientAuth for a client certificate): %v",
		certName(c), strings.Join(UsageNames(c), ", "), err)
}

// UsageNames names the extended key usages of c.
func UsageNames(c *x509.Certificate) []string {
	names := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageAny: "any", x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth",
		x509.ExtKeyUsageCodeSigning: "codeSigning", x509.ExtKeyUsageEmailProtection: "emailProtection",
		x509.ExtKeyUsageTimeStamping: "timeStamping", x509.ExtKeyUsageOCSPSigning: "OCSPSigning",
	}
	var out []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := names[u]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("usage(%d)", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		out = append(out, oid.String())
	}
	return out
}
