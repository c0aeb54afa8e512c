package truststore

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

func init() {
	caddy.RegisterModule(LiveTrust{})
}

// LiveTrust verifies client certificate chains against the CURRENT version
// of a trust pool on every handshake, so a CA added to a hot-reloaded
// truststore is trusted by the next handshake and a CA removed is refused
// (Caddy gives crypto/tls a client_auth trust_pool once, at config load).
//
// Use it instead of `trust_pool` inside `client_auth`, with no `mode`
// (Caddy then requires a client certificate; under `mode request` a client
// without one gets through, with no verified identity). A client_auth it
// cannot work in is refused at load (CheckClientAuth).
type LiveTrust struct {
	// TrustPoolRaw is the trust pool source to verify against (any
	// `tls.ca_pool.source.*` module; ours reload live). Required.
	TrustPoolRaw json.RawMessage `json:"trust_pool,omitempty" caddy:"namespace=tls.ca_pool.source inline_key=provider"`

	pool     caddytls.CA
	src      verify.AnchorSource // pool, when it is one of the suite's sources
	unlisten func()
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (LiveTrust) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.client_auth.verifier.live_trust",
		New: func() caddy.Module { return new(LiveTrust) },
	}
}

// Provision refuses a client_auth it cannot work in (CheckClientAuth)
// and loads the trust pool source.
func (v *LiveTrust) Provision(ctx caddy.Context) error {
	v.logger = ctx.Logger()
	if v.TrustPoolRaw == nil {
		return errors.New("live_trust: a trust_pool source is required")
	}
	if err := checkOwnPolicy(ctx); err != nil {
		return err
	}
	mod, err := ctx.LoadModule(v, "TrustPoolRaw")
	if err != nil {
		return fmt.Errorf("live_trust: loading trust pool: %w", err)
	}
	v.pool = mod.(caddytls.CA)
	if src, ok := mod.(verify.AnchorSource); ok {
		v.src = src
		// a pool change reaches open connections
		logger := v.logger
		v.unlisten = src.OnChange(func() { go verify.RecheckConns(logger) })
		verify.TrackHTTPServer(ctx)
	}
	verify.RegisterMetrics(ctx)
	return nil
}

// errNoPool refuses a handshake when the pool source has no current
// version: x509.VerifyOptions with nil Roots would mean the system roots.
var errNoPool = &verify.Refusal{Reason: verify.ReasonNoPool,
	Err: errors.New("live_trust: the trust pool has no current version; refusing the client certificate")}

// current is the pool version to verify against now: the suite's own
// source's Anchors, or one over another source's current pool (still
// scoped: Caddy's `combined` pool may hold a SPIFFE source of ours).
func (v *LiveTrust) current() *verify.Anchors {
	if v.src != nil {
		return v.src.CurrentAnchors()
	}
	if pool := v.pool.CertPool(); pool != nil {
		return verify.PoolAnchors(pool)
	}
	return nil
}

// VerifyClientCertificate verifies the presented chain (the leaf, then the
// intermediates the client sent) against the pool's current version for
// the clientAuth usage (verify.Anchors.Verify). The verified chain, anchor
// included, is recorded for the connection (verify.Record): it, never the
// presented chain, is what the peer identity, revocation checks and
// headers read. When the pool changes, an open connection whose chain no
// longer verifies loses its identity and is closed (verify.RecheckConns).
func (v *LiveTrust) VerifyClientCertificate(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	if len(rawCerts) == 0 {
		return v.refused(nil, nil, &verify.Refusal{Reason: verify.ReasonNoCertificate, Err: errors.New("no client certificate")})
	}
	// under `caddy trustline explain`, the steps are told, not logged or counted
	trace := verify.TraceFor(rawCerts[0])
	anchors := v.current()
	if anchors == nil {
		return v.refused(trace, nil, errNoPool)
	}
	leaf, err := verify.ParseCertificate(rawCerts[0])
	if err != nil {
		return v.refused(trace, nil, &verify.Refusal{Reason: verify.ReasonMalformed, Err: fmt.Errorf("client certificate: %w", err)})
	}
	var inters []*x509.Certificate
	for _, raw := range rawCerts[1:] {
		c, err := verify.ParseCertificate(raw)
		if err != nil {
			return v.refused(trace, leaf, &verify.Refusal{Reason: verify.ReasonMalformed, Err: fmt.Errorf("client chain: %w", err)})
		}
		inters = append(inters, c)
	}
	now := time.Now()
	chain, td, err := anchors.Verify(leaf, inters, x509.ExtKeyUsageClientAuth, now)
	if trace != nil {
		trace.Add(verify.ChainStep("live_trust", leaf, inters, anchors.Certificates(), v.origin, chain, td, err, now))
	}
	if err != nil {
		return v.refused(trace, leaf, err)
	}
	verify.Remember(chain[:len(chain)-1])
	rec := &verify.Verified{Chain: chain, TrustDomain: td}
	if v.src != nil {
		rec.DependOn(v.src.Version, v.recheck)
	}
	verify.Record(rawCerts[0], rec)
	if trace == nil {
		verify.CountVerdict("live_trust", verify.VerdictAdmitted, "")
	}
	return nil
}

// recheck verifies a recorded chain again against the pool's current
// version, after the pool changed.
func (v *LiveTrust) recheck(chain []*x509.Certificate) error {
	_, _, err := v.src.CurrentAnchors().Verify(chain[0], chain[1:len(chain)-1], x509.ExtKeyUsageClientAuth, time.Now())
	return err
}

// refused logs and counts a refusal (leaf may be nil); under explain
// (trace set) it adds the refusals before chain building to the trace.
func (v *LiveTrust) refused(trace *verify.Trace, leaf *x509.Certificate, err error) error {
	reason := verify.ReasonOf(err)
	if trace != nil {
		if reason == verify.ReasonNoPool || reason == verify.ReasonMalformed { // no chain step told it
			trace.Add(verify.Step{Stage: "chain", Name: "live_trust", Verdict: verify.VerdictRefused, Reason: reason, Detail: err.Error()})
		}
		return err
	}
	verify.CountVerdict("live_trust", verify.VerdictRefused, reason)
	level := zapcore.InfoLevel
	if reason == verify.ReasonNoPool {
		level = zapcore.ErrorLevel
	}
	if ce := v.logger.Check(level, "client certificate refused"); ce != nil {
		fields := []zap.Field{zap.String("reason", reason)}
		if leaf != nil {
			fields = append(fields, zap.String("subject", leaf.Subject.String()),
				zap.String("issuer", leaf.Issuer.String()),
				zap.String("serial", material.SerialString(leaf)))
		}
		ce.Write(append(fields, zap.Error(err))...)
	}
	return err
}

// Cleanup stops following the pool's changes.
func (v *LiveTrust) Cleanup() error {
	if v.unlisten != nil {
		v.unlisten()
	}
	return nil
}

// UnmarshalCaddyfile sets up the verifier from Caddyfile tokens.
//
// Syntax:
//
//	client_auth {
//		verifier live_trust <pool_source> [<args...>] {
//			<pool source options>
//		}
//	}
//
// for example `verifier live_trust truststore /etc/ca.jks { password {env.P} }`.
func (v *LiveTrust) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	raw, err := ParsePoolSource(d, "verifier live_trust")
	if err != nil {
		return err
	}
	v.TrustPoolRaw = raw
	return nil
}

// ParsePoolSource parses `<pool_source> [<args...>] [{...}]` at the
// dispenser's next argument into a `tls.ca_pool.source.*` module object,
// as Caddy's `trust_pool` does: the one Caddyfile parser for trust pool
// sources. where names the directive and option for errors ("transport
// mtls: trust_pool").
func ParsePoolSource(d *caddyfile.Dispenser, where string) (json.RawMessage, error) {
	var names []string
	for _, m := range caddy.GetModules(poolNamespace) {
		names = append(names, m.ID.Name()) // Caddy's and the suite's
	}
	known := strings.Join(names, ", ")
	if !d.NextArg() {
		return nil, d.Errf("%s: expected a trust pool source (%s)", where, known)
	}
	name := d.Val()
	modID := poolNamespace + "." + name
	if _, err := caddy.GetModule(modID); err != nil {
		return nil, d.Errf("%s: unknown trust pool source '%s' (expected one of: %s)", where, name, known)
	}
	unm, err := caddyfile.UnmarshalModule(d, modID)
	if err != nil {
		// the source's error names itself and its line
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if _, ok := unm.(caddytls.CA); !ok {
		return nil, d.Errf("%s: '%s' is not a certificate pool provider", where, name)
	}
	return caddyconfig.JSONModuleObject(unm, "provider", name, nil), nil
}

// poolNamespace is Caddy's namespace of trust pool sources.
const poolNamespace = "tls.ca_pool.source"

// Interface guards
var (
	_ caddy.Provisioner                  = (*LiveTrust)(nil)
	_ caddy.CleanerUpper                 = (*LiveTrust)(nil)
	_ caddyfile.Unmarshaler              = (*LiveTrust)(nil)
	_ caddytls.ClientCertificateVerifier = (*LiveTrust)(nil)
)
