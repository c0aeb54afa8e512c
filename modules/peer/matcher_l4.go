package peer

import (
	"crypto/tls"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4tls"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(L4MatchPeer{})
}

// L4MatchPeer is the layer-4 peer matcher: it matches connections on which
// a caddy-l4 `tls` handler terminated TLS with a verified client
// certificate whose identity satisfies the patterns. It reads the innermost
// (last) terminated TLS connection. A connection without one, or without a
// verified client certificate, never matches.
//
// It has the same syntax and semantics as the HTTP `peer` matcher and
// publishes the same {peer.*} placeholders in the connection's replacer
// (for example for `proxy` upstream addresses or the log).
type L4MatchPeer struct {
	Patterns

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (L4MatchPeer) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.matchers.peer",
		New: func() caddy.Module { return new(L4MatchPeer) },
	}
}

// Provision compiles the patterns.
func (m *L4MatchPeer) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	if err := m.Compile(); err != nil {
		return fmt.Errorf("layer4 peer matcher: %w", err)
	}
	return nil
}

// Match reports whether the connection's verified peer matches. It never
// returns an error.
func (m *L4MatchPeer) Match(cx *layer4.Connection) (bool, error) {
	states := l4tls.GetConnectionStates(cx)
	if len(states) == 0 {
		return false, nil
	}
	cs := states[len(states)-1]
	id := FromState(cs)
	publishL4(cx, cs, id)
	return m.matchLogged(m.logger, id, zap.Stringer("remote", cx.RemoteAddr())), nil
}

const publishedL4Var = "trustline.peer.published"

// publishL4 adds the {peer.*} placeholders to the connection's replacer,
// once per connection.
func publishL4(cx *layer4.Connection, cs *tls.ConnectionState, id *Identity) {
	if cx.GetVar(publishedL4Var) != nil {
		return
	}
	cx.SetVar(publishedL4Var, true)
	if repl, ok := cx.Context.Value(layer4.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(replacerFunc(cs, id))
	}
}

// UnmarshalCaddyfile sets up the matcher; the syntax is that of the HTTP
// peer matcher:
//
//	peer <pattern...>
//	peer {
//		spiffe_id <spiffe://td/path...>
//		...
//	}
func (m *L4MatchPeer) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalMatcher(d, &m.Patterns, "layer4 peer matcher")
}

// Interface guards
var (
	_ caddy.Provisioner     = (*L4MatchPeer)(nil)
	_ layer4.ConnMatcher    = (*L4MatchPeer)(nil)
	_ caddyfile.Unmarshaler = (*L4MatchPeer)(nil)
)
