package revocation

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

// What `caddy trustline explain` asks of the revocation checks
// (VerifyTraced): the same checks, on what is in memory now; what is not
// cached is unavailable with errNotFetched.

// errNotFetched marks a status explain did not fetch.
var errNotFetched = errors.New("not cached; explain fetches nothing (the server fetches it at the handshake)")

// NotFetched reports whether err, a refusal of VerifyTraced, only says
// that explain did not fetch a status the server would fetch.
func NotFetched(err error) bool { return errors.Is(err, errNotFetched) }

// note adds one check to notes (nil outside explain).
func note(notes *[]verify.Check, cert *x509.Certificate, want, have string, ok bool) {
	if notes == nil {
		return
	}
	*notes = append(*notes, verify.Check{
		Name: fmt.Sprintf("%q (serial %s)", cert.Subject.String(), material.SerialString(cert)),
		Want: want, Have: have, OK: ok,
	})
}

// crlName names a CRL for explain: where it comes from, its number and
// its nextUpdate.
func crlName(e *crlEntry) string {
	s := "CRL from " + e.source
	if e.list.Number != nil {
		s += ", number " + e.list.Number.String()
	}
	if !e.list.NextUpdate.IsZero() {
		s += ", nextUpdate " + material.TimeString(e.list.NextUpdate)
	}
	return s
}

// unfetched marks a refusal that only says explain did not fetch.
type unfetched struct{ error }

func (u *unfetched) Unwrap() []error { return []error{u.error, errNotFetched} }

// cached is checkOne on the answer cache only: a cached answer counts, a
// missing one is unavailable (errNotFetched).
func (o *OCSP) cached(cert, issuer *x509.Certificate, notes *[]verify.Check) error {
	key := ocspKey(cert, issuer)
	o.mu.Lock()
	a, ok := o.cache[key]
	o.mu.Unlock()
	if ok && o.now().Before(a.until) {
		have := "good"
		if a.err != nil {
			have = a.err.Error()
		}
		note(notes, cert, "OCSP answer cached until "+material.TimeString(a.until), have, a.err == nil)
		return a.err
	}
	responder := o.responderURL(cert)
	if responder == "" {
		responder = "no responder: the certificate names none and no ocsp_responder is set"
	}
	err := fmt.Errorf("%w for certificate %q: no OCSP answer (%s) %w", errOCSPUnavailable, cert.Subject, responder, errNotFetched)
	note(notes, cert, "OCSP answer", err.Error(), false)
	return err
}

// revocationStep is the explain step of one method (crl, ocsp): its
// outcome as Verify counts it (good, revoked, unavailable, soft_fail),
// the refusal, the soft_fail option that applies, and the checks.
func revocationStep(method, result string, err error, softOption string, checks []verify.Check) verify.Step {
	s := verify.Step{Stage: "revocation", Name: method, Checks: checks}
	switch result {
	case "good":
		s.Verdict, s.Detail = verify.VerdictAdmitted, "no certificate of the chain is revoked"
	case "revoked":
		s.Verdict, s.Reason, s.Detail = verify.VerdictRefused, verify.ReasonRevoked, err.Error()
	case "soft_fail":
		s.Verdict, s.Reason = verify.VerdictSoftFail, verify.ReasonRevocationUnknown
		s.Detail = err.Error() + "; " + softOption + " lets the client through, with a warning in the log"
	default:
		s.Verdict, s.Reason = verify.VerdictRefused, verify.ReasonRevocationUnknown
		s.Detail = err.Error() + "; without " + softOption + " the client is refused (fail closed)"
	}
	if NotFetched(err) && result != "revoked" {
		s.Verdict = verify.VerdictUnknown
	}
	return s
}
