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
)

func init() {
	caddy.RegisterModule(LiveTrust{})
}

// LiveTrust verifies client certificate chains against the CURRENT version
// of a trust pool on every handshake, so a CA added to a hot-reloaded
// truststore is trusted by the next handshake and a CA removed is refused.
// (Caddy gives crypto/tls a client_auth trust_pool once, when the config is
// loaded; reloads of the pool's files would not reach it.)
//
// Use it instead of `trust_pool` inside `client_auth`, with no `mode`:
// Caddy then requires a client certificate and this verifier checks it.
// Every certificate a client presents is verified; under `mode request`
// a client without one gets through, with no verified identity. A config
// that also gives client_auth a trust_pool, a mode in which crypto/tls
// verifies the chain itself (require_and_verify, verify_if_given), or
// lists `verifier peer` before this one is refused at load
// (CheckClientAuth).
type LiveTrust struct {
	// TrustPoolRaw is the trust pool source to verify against (any
	// `tls.ca_pool.source.*` module; ours reload live). Required.
	TrustPoolRaw json.RawMessage `json:"trust_pool,omitempty" caddy:"namespace=tls.ca_pool.source inline_key=provider"`

	pool   caddytls.CA
	logger *zap.Logger
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
	return nil
}

// errNoPool refuses a handshake when the pool source has no current
// version: x509.VerifyOptions with nil Roots would mean the system roots.
var errNoPool = errors.New("live_trust: the trust pool has no current version; refusing the client certificate")

// VerifyClientCertificate verifies the presented chain (rawCerts: the leaf,
// then the intermediates the client sent) against the current pool, for
// the clientAuth usage. A chain that leads to a SPIFFE bundle's authority
// must end in an X509-SVID of that authority's own trust domain
// (material.ScopeChains). The chain that verification returned, anchor
// included, is recorded for this connection (material.RecordVerified):
// it, and never the presented chain, is what the peer identity, the
// revocation checks and the forwarded headers read.
func (v *LiveTrust) VerifyClientCertificate(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	if len(rawCerts) == 0 {
		return errors.New("no client certificate")
	}
	roots := v.pool.CertPool()
	if roots == nil {
		v.logger.Error("client certificate refused", zap.Error(errNoPool))
		return errNoPool
	}
	leaf, err := material.ParseCertificate(rawCerts[0])
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	opts := x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: time.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(rawCerts) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, raw := range rawCerts[1:] {
			c, err := material.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("client chain: %w", err)
			}
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	var chain []*x509.Certificate
	var td string
	if err == nil {
		chain, td, err = material.ScopeChains(chains)
	}
	if err != nil {
		if ce := v.logger.Check(zapcore.InfoLevel, "client certificate refused"); ce != nil {
			ce.Write(zap.String("subject", leaf.Subject.String()),
				zap.String("issuer", leaf.Issuer.String()),
				zap.String("serial", material.SerialString(leaf)),
				zap.Error(err))
		}
		return err
	}
	material.Remember(chain[:len(chain)-1])
	material.RecordVerified(rawCerts[0], &material.Verified{Chain: chain, TrustDomain: td})
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
// as Caddy's own `trust_pool` does. It is the one Caddyfile parser for
// trust pool sources: every directive of the suite that takes a trust
// pool uses it (live_trust, the mtls transport, the passthrough handler,
// storage redis). where names the directive and option for errors, as in
// "transport mtls: trust_pool"; the source's own errors come after it.
func ParsePoolSource(d *caddyfile.Dispenser, where string) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.Errf("%s: expected a trust pool source (%s)", where, strings.Join(PoolSourceNames(), ", "))
	}
	name := d.Val()
	modID := poolNamespace + "." + name
	if _, err := caddy.GetModule(modID); err != nil {
		return nil, d.Errf("%s: unknown trust pool source '%s' (expected one of: %s)", where, name, strings.Join(PoolSourceNames(), ", "))
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

// PoolSourceNames lists the registered trust pool sources, Caddy's and the
// suite's.
func PoolSourceNames() []string {
	var names []string
	for _, m := range caddy.GetModules(poolNamespace) {
		names = append(names, m.ID.Name())
	}
	return names
}

// Interface guards
var (
	_ caddy.Provisioner                  = (*LiveTrust)(nil)
	_ caddyfile.Unmarshaler              = (*LiveTrust)(nil)
	_ caddytls.ClientCertificateVerifier = (*LiveTrust)(nil)
)
