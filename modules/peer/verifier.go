package peer

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/revocation"
	"github.com/trustline/trustline/modules/verify"
)

func init() {
	caddy.RegisterModule(Verifier{})
}

// Verifier refuses, during the TLS handshake, a client whose verified
// certificate does not satisfy the identity patterns: the connection fails
// with a bad_certificate alert before any HTTP (or layer-4) byte is read.
// It applies per TLS connection policy, so per SNI.
//
// It decides on the chain that crypto/tls verified against the policy's
// `trust_pool`, or on a chain that truststore's `verifier live_trust`
// (listed before this verifier) verified: a certificate that nothing
// verified (no trust_pool, or client_auth mode request/require) is always
// refused, never authorized, and the reason is logged. Caddy calls verifiers only when the client sent
// a certificate: use `mode require_and_verify` (the default with a
// trust_pool) so that a client without one is refused too.
//
// With `shadow`, it refuses nothing and logs, at INFO, every client it
// would have refused, with the identity and the rule that did not match.
type Verifier struct {
	Patterns

	// Shadow logs what would be refused and refuses nothing. Default false.
	Shadow bool `json:"shadow,omitempty"`

	// Revocation checks client certificates against CRLs and with OCSP;
	// see revocation.Revocation. Optional. With it, the verifier may have
	// no identity pattern: it then refuses only revoked certificates (and
	// unverified ones).
	Revocation *revocation.Revocation `json:"revocation,omitempty"`

	logger   *zap.Logger
	unlisten func()
}

// CaddyModule returns the Caddy module information.
func (Verifier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.client_auth.verifier.peer",
		New: func() caddy.Module { return new(Verifier) },
	}
}

// Provision compiles the patterns and starts revocation checking.
func (v *Verifier) Provision(ctx caddy.Context) error {
	v.logger = ctx.Logger()
	registerMetrics(ctx)
	if v.Revocation == nil || !v.Patterns.Empty() { // none is fine with revocation on
		if err := v.Compile(); err != nil {
			return fmt.Errorf("peer verifier: %w", err)
		}
	}
	if v.Revocation != nil {
		if err := v.Revocation.Provision(ctx, v.logger); err != nil {
			return fmt.Errorf("peer verifier: revocation: %w", err)
		}
		// a CRL put in force reaches open connections
		logger := v.logger
		v.unlisten = revocation.OnCRLChange(func() { verify.RecheckConns(logger) })
		verify.TrackHTTPServer(ctx)
	}
	return nil
}

// Cleanup stops the CRL refresh loop.
func (v *Verifier) Cleanup() error {
	if v.unlisten != nil {
		v.unlisten()
	}
	if v.Revocation != nil {
		v.Revocation.Cleanup()
	}
	return nil
}

var errUnverified = errors.New("peer: client certificate was not verified against a trust pool (configure client_auth trust_pool); refusing it")

// VerifyClientCertificate is called by Caddy during every handshake in
// which the client sent a certificate. (A connection policy with
// client_auth issues no session tickets, Caddy turns them off there, so
// no session resumes past this check.)
func (v *Verifier) VerifyClientCertificate(rawCerts [][]byte, verifiedChains [][]*x509.Certificate) error {
	// under `caddy trustline explain`, the steps are told, not logged or counted
	var trace *verify.Trace
	if len(rawCerts) > 0 {
		trace = verify.TraceFor(rawCerts[0])
	}
	chain, id, scopeErr := verifiedPeer(rawCerts, verifiedChains)
	if id == nil {
		if scopeErr != nil {
			return v.refuse(trace, "client certificate not verified", verify.ReasonOf(scopeErr), nil, scopeErr.Error(), fmt.Errorf("peer: client certificate refused: %w", scopeErr))
		}
		return v.refuse(trace, "client certificate not verified", verify.ReasonUnverified, nil,
			"no verified chain: crypto/tls did not verify the certificate (client_auth has no trust_pool, or mode is request/require) and no live_trust verifier before this one verified it", errUnverified)
	}
	if v.Revocation != nil {
		refuse, msg, soft := v.Revocation.VerifyTraced(chain, trace)
		for _, s := range soft {
			// under explain, the revocation step says it
			if ce := v.logger.Check(zap.WarnLevel, s.Msg); ce != nil && trace == nil {
				ce.Write(append(identityFields(id), zap.Error(s.Err))...)
			}
		}
		if refuse != nil {
			if err := v.refuse(trace, msg, revocationReason(refuse), id, refuse.Error(), fmt.Errorf("peer: %w", refuse)); err != nil {
				return err
			}
		} else if !v.Shadow {
			v.dependOnCRLs(rawCerts[0], chain, id)
		}
	}
	if v.Patterns.c == nil {
		v.admitted(trace, id, "revocation only: no identity pattern")
		return nil
	}
	if ok, failed := v.Match(id); !ok {
		return v.refuse(trace, "client identity not allowed", verify.ReasonNotAllowed, id, v.mismatch(id, failed),
			fmt.Errorf("peer: client identity not allowed: %s", v.mismatch(id, failed)), v.ruleFields(id, failed)...)
	}
	v.admitted(trace, id, "the identity matches the patterns")
	return nil
}

// dependOnCRLs records that the connection's verdict holds with the CRLs
// in force now: when one changes, the connection is checked again
// (verify.RecheckConns closes it if its chain is revoked since).
func (v *Verifier) dependOnCRLs(leafRaw []byte, chain []*x509.Certificate, id *Identity) {
	rec := verify.Lookup(leafRaw)
	if rec == nil { // crypto/tls verified the chain: the record starts here
		rec = &verify.Verified{Chain: chain, TrustDomain: id.AnchorTrustDomain}
		verify.Record(leafRaw, rec)
	}
	rec.DependOn(v.Revocation.Version, func(chain []*x509.Certificate) error {
		if refuse, _, _ := v.Revocation.VerifyTraced(chain, nil); refuse != nil {
			return &verify.Refusal{Reason: revocationReason(refuse), Err: refuse}
		}
		return nil
	})
}

// revocationReason is the reason class of a revocation refusal: revoked,
// or no usable answer under hard-fail.
func revocationReason(err error) string {
	if revocation.Unavailable(err) {
		return verify.ReasonRevocationUnknown
	}
	return verify.ReasonRevoked
}

// verifiedPeer returns the verified client of a handshake, its chain
// (leaf first, trust anchor last) and identity: the chain that
// truststore's live_trust verifier (listed before this one) verified and
// recorded for this handshake, or else the chain crypto/tls verified; no
// identity when nothing verified it, or (with scopeErr) when the chain
// leads to a SPIFFE authority that may not vouch for the leaf.
func verifiedPeer(rawCerts [][]byte, verifiedChains [][]*x509.Certificate) (chain []*x509.Certificate, id *Identity, scopeErr error) {
	if len(rawCerts) > 0 {
		if rec := verify.Lookup(rawCerts[0]); rec != nil {
			return rec.Chain, fromRecord(rec), nil
		}
	}
	if id, scopeErr = fromChains(verifiedChains); id == nil {
		return nil, nil, scopeErr
	}
	chain, _, _ = verify.Scope(verifiedChains, x509.ExtKeyUsageClientAuth) // the chain id was built from
	return chain, id, nil
}

// refuse logs and counts a refusal (or, in shadow mode, what would be
// refused) and returns err, or nil in shadow mode; reason is its class (a
// verify.Reason constant), detail says what exactly (the log's `detail`
// field, unless extra fields say it). Under explain (trace set) it adds a
// step instead.
func (v *Verifier) refuse(trace *verify.Trace, msg, reason string, id *Identity, detail string, err error, extra ...zap.Field) error {
	verdict := verify.VerdictRefused
	if v.Shadow {
		verdict, err = verify.VerdictShadow, nil
	}
	if trace != nil {
		s := verify.Step{Stage: "identity", Name: "peer", Verdict: verdict, Reason: reason, Detail: msg + ": " + detail}
		if reason == verify.ReasonRevoked || reason == verify.ReasonRevocationUnknown {
			s.Detail = detail // the revocation step before says which CRL or OCSP answer
		}
		if reason == verify.ReasonNotAllowed {
			s.Checks = v.Patterns.Checks(id)
		}
		if v.Shadow {
			s.Detail = "shadow: would refuse, lets the client through: " + s.Detail
		}
		trace.Add(s)
		return err
	}
	if v.Shadow {
		msg = "shadow: would refuse: " + msg
	} else {
		msg = "refused TLS handshake: " + msg
	}
	peerDecisions.WithLabelValues("verifier", verdict).Inc()
	verify.CountVerdict("peer", verdict, reason)
	if len(extra) == 0 {
		extra = []zap.Field{zap.String("detail", detail)}
	}
	if ce := v.logger.Check(zap.InfoLevel, msg); ce != nil {
		ce.Write(append(append(identityFields(id), zap.String("reason", reason)), extra...)...)
	}
	return err
}

// admitted counts an admitted peer, or under explain adds the step.
func (v *Verifier) admitted(trace *verify.Trace, id *Identity, detail string) {
	if trace == nil {
		verify.CountVerdict("peer", verify.VerdictAdmitted, "")
		return
	}
	s := verify.Step{Stage: "identity", Name: "peer", Verdict: verify.VerdictAdmitted, Detail: detail + " (" + id.Describe() + ")"}
	if v.Patterns.c != nil {
		s.Checks = v.Patterns.Checks(id)
	}
	trace.Add(s)
}

// UnmarshalCaddyfile sets up the verifier, inside client_auth. Syntax:
//
//	verifier peer <pattern...>
//	verifier peer [<pattern...>] {
//		spiffe_id    <spiffe://td/path...>
//		trust_domain <td...>
//		dns | uri | email | ip | subject | cn | o | ou | issuer | fingerprint | spki <values...>
//		shadow
//		<revocation option...>
//	}
//
// Patterns are those of the `peer` matcher; the revocation options (crl,
// ocsp, ...: revocation.CaddyfileOptions) are those of
// revocation.Revocation. With one of them the patterns may be left out:
// the verifier then checks revocation only.
func (v *Verifier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const directive = "verifier peer"
	option := func() (bool, error) {
		if d.Val() == "shadow" {
			return true, parseShadow(d, directive, &v.Shadow)
		}
		if v.Revocation == nil {
			v.Revocation = new(revocation.Revocation)
		}
		return v.Revocation.UnmarshalOption(d, directive)
	}
	if err := v.parseLines(d, directive, option, "shadow, "+revocation.CaddyfileOptions); err != nil {
		return err
	}
	if v.Revocation != nil {
		if err := v.Revocation.ValidateCaddyfile(d, directive); err != nil {
			return err
		}
		if v.Patterns.Empty() {
			return nil // revocation only
		}
	}
	return v.Patterns.validate(d, directive)
}

// Interface guards
var (
	_ caddy.Provisioner                  = (*Verifier)(nil)
	_ caddy.CleanerUpper                 = (*Verifier)(nil)
	_ caddytls.ClientCertificateVerifier = (*Verifier)(nil)
	_ caddyfile.Unmarshaler              = (*Verifier)(nil)
)
