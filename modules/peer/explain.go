package peer

import (
	"net/http"
	"strings"

	"github.com/trustline/trustline/modules/verify"
)

// What `caddy trustline explain` asks of the peer modules: the same
// decisions, told instead of acted on.

// Checks says, for every configured pattern, whether id matches it: one
// check per pattern (the field, the pattern, the identity's value for
// that field), so that explain shows which pattern matched, or for each
// field why none did. The verdict is Match's: a field matches when one
// of its patterns does, and every field must match. A nil identity
// matches nothing.
func (p *Patterns) Checks(id *Identity) []verify.Check {
	var out []verify.Check
	for f := Field(0); f < numFields; f++ {
		for _, pat := range *p.list(f) {
			have := "no verified identity"
			ok := false
			if id != nil {
				have = id.Value(f)
				one := new(compiled)
				ok = one.add(f, pat) == nil && one.matchField(f, id)
			}
			out = append(out, verify.Check{Name: f.String(), Want: pat, Have: have, OK: ok})
		}
	}
	return out
}

// Describe says who id is, for explain: its SPIFFE ID (or why it has
// none) and subject.
func (id *Identity) Describe() string {
	if id == nil {
		return "no verified identity"
	}
	var parts []string
	switch {
	case id.SPIFFEID != "":
		s := "SPIFFE ID " + id.SPIFFEID
		if id.AnchorTrustDomain != "" {
			s += " (anchor of trust domain " + id.AnchorTrustDomain + ")"
		}
		parts = append(parts, s)
	case id.SPIFFEReason != "":
		parts = append(parts, "no SPIFFE ID ("+id.SPIFFEReason+")")
	}
	parts = append(parts, "subject "+id.Subject, "serial "+id.Serial)
	if len(id.DNSNames) > 0 {
		parts = append(parts, "DNS "+strings.Join(id.DNSNames, ","))
	}
	return strings.Join(parts, ", ")
}

// Decision is what peer_authorize decides for a request.
type Decision struct {
	// Identity is the request's verified peer (nil: none).
	Identity *Identity
	// Allowed: the identity satisfies the patterns.
	Allowed bool
	// Failed is the first field no value matched, when not allowed and
	// there is an identity.
	Failed Field
	// Shadow: the handler denies nothing, whatever Allowed says.
	Shadow bool
	// Reason is the class of a denial (verify's Reason constants, as in
	// the denial's log line): not_allowed, no_certificate (none
	// presented) or unverified (presented, not verified); "" if allowed.
	Reason string
}

// Decide is peer_authorize's decision on r; ServeHTTP acts on it.
func (a *Authorize) Decide(r *http.Request) Decision {
	id := publish(r)
	ok, failed := a.Patterns.Match(id)
	d := Decision{Identity: id, Allowed: ok, Failed: failed, Shadow: a.Shadow}
	switch {
	case ok:
	case id != nil:
		d.Reason = verify.ReasonNotAllowed
	case r.TLS != nil && len(r.TLS.PeerCertificates) > 0:
		d.Reason = verify.ReasonUnverified
	default:
		d.Reason = verify.ReasonNoCertificate
	}
	return d
}

// Stripped lists the inbound header names forward_peer_identity removes
// from every request (normalized: lowercase, "_" as "-"), whatever the
// client sends: the identity family, the headers it sets and `strip`.
func (h *ForwardHeaders) Stripped() []string { return append([]string(nil), h.family...) }
