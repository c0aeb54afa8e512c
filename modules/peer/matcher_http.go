package peer

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(MatchPeer{})
}

// MatchPeer matches requests whose client certificate was verified and
// whose identity satisfies the patterns. A request without a verified
// client certificate (no certificate, or one that crypto/tls did not verify
// under client_auth mode request/require) never matches; under `not` it
// therefore always does, which makes `not peer ...` a safe deny rule.
//
// Using it also publishes the {peer.*} placeholders and the "peer" access
// log object for the request.
type MatchPeer struct {
	Patterns

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (MatchPeer) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.matchers.peer",
		New: func() caddy.Module { return new(MatchPeer) },
	}
}

// Provision compiles the patterns, and warns when the site never asks
// for a client certificate.
func (m *MatchPeer) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	if err := m.Compile(); err != nil {
		return fmt.Errorf("peer matcher: %w", err)
	}
	warnNoClientCert(ctx, m.logger, "the peer matcher", "it never matches")
	return nil
}

// MatchWithError reports whether the request's verified peer matches. It
// never returns an error.
func (m *MatchPeer) MatchWithError(r *http.Request) (bool, error) {
	return m.Match(r), nil
}

// Match is MatchWithError for the deprecated RequestMatcher interface.
func (m *MatchPeer) Match(r *http.Request) bool {
	return m.matchLogged(m.logger, publish(r), zap.String("remote_ip", r.RemoteAddr))
}

// UnmarshalCaddyfile sets up the matcher. Syntax:
//
//	peer <pattern...>
//	peer {
//		spiffe_id    <spiffe://td/path...>
//		trust_domain <td...>
//		dns | uri | email | ip | subject | cn | o | ou | issuer | fingerprint | spki <values...>
//	}
//
// Short-form patterns are SPIFFE IDs (spiffe://...) or values with a field
// prefix: trust_domain:, dns:, uri:, email:, ip:, subject:, cn:, o:, ou:,
// issuer:, sha256: (or fingerprint:), spki:. Several lines of the same
// matcher are merged.
func (m *MatchPeer) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalMatcher(d, &m.Patterns, "peer")
}

// unmarshalMatcher parses the matcher syntax shared by the HTTP and
// layer-4 matchers into p.
func unmarshalMatcher(d *caddyfile.Dispenser, p *Patterns, directive string) error {
	if err := p.parseLines(d, directive, nil, ""); err != nil {
		return err
	}
	return p.validate(d, directive)
}

// Interface guards
var (
	_ caddy.Provisioner                 = (*MatchPeer)(nil)
	_ caddyhttp.RequestMatcherWithError = (*MatchPeer)(nil)
	_ caddyfile.Unmarshaler             = (*MatchPeer)(nil)
)
