// Package caddyinternals is the one door through which the suite depends
// on how Caddy (v2.11.9) and caddy-l4 work inside, beyond their
// documented API: the provisioning order (this file), the running config
// (config.go), httpcaddyfile's state while a Caddyfile is adapted
// (caddyfile.go), caddy-l4's connection variables (layer4.go),
// reverse_proxy's request variables (below) and the pki app's
// storage and in-memory CA (pki.go). Each reach says what it relies on
// and why there is no public way, and has one test that runs it against
// the real Caddy or caddy-l4 code and fails naming the reach and the
// version; TestVersions fails when go.mod pins other versions. The list,
// with the users of each: docs/architecture.md, "Reaches into Caddy's
// private state".
package caddyinternals

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4tls"
)

// CaddyVersion is the Caddy version these reaches were written against
// (TestVersions checks that go.mod pins it).
const CaddyVersion = "v2.11.9"

// ReverseProxyH1OnlyVar is the request variable (Caddy's unexported
// tlsH1OnlyVarKey) by which reverse_proxy asks its transport for an
// HTTP/1.1-only TLS connection on a WebSocket upgrade, as a transport
// that dials TLS itself must honour. TestReverseProxyH1OnlyVar pins it.
const ReverseProxyH1OnlyVar = "reverse_proxy.tls_h1_only"

// HTTPServer returns the HTTP server whose modules ctx provisions, or nil.
// Caddy's http app puts the server in the context of everything it
// provisions for it (caddyhttp.ServerCtxKey): routes, listener wrappers,
// TLS connection policies.
func HTTPServer(ctx caddy.Context) *caddyhttp.Server {
	if ctx.Context == nil { // a module provisioned by hand, in a test
		return nil
	}
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return srv
}

// PolicyHolder is a module that provisions TLS connection policies of its
// own (the passthrough module's terminate_tls handler).
type PolicyHolder interface {
	TLSConnectionPolicies() caddytls.ConnectionPolicies
}

// VerifierPolicy returns, from a `tls.client_auth.verifier.*` module's
// Provision, the TLS connection policy the verifier belongs to; nil when
// there is none (the verifier is used elsewhere). The policies are those
// of the nearest layer-4 tls or terminate_tls handler above it, else the
// HTTP server's.
//
// It relies on the order of caddytls.ConnectionPolicies.Provision: a
// policy's TLSConfig is built (ClientAuth and ClientCAs from mode and
// trust_pool) before its verifiers are loaded, and its VerifiersRaw is
// cleared once they are. So the verifier's own policy is the one with both:
// those before it have no VerifiersRaw left, those after no TLSConfig yet.
func VerifierPolicy(ctx caddy.Context) *caddytls.ConnectionPolicy {
	for _, p := range policiesAround(ctx) {
		if p != nil && p.TLSConfig != nil && p.ClientAuthentication != nil && len(p.ClientAuthentication.VerifiersRaw) > 0 {
			return p
		}
	}
	return nil
}

func policiesAround(ctx caddy.Context) caddytls.ConnectionPolicies {
	mods := ctx.Modules()
	for i := len(mods) - 1; i >= 0; i-- {
		switch m := mods[i].(type) {
		case *l4tls.Handler:
			return m.ConnectionPolicies
		case PolicyHolder:
			return m.TLSConnectionPolicies()
		}
	}
	if srv := HTTPServer(ctx); srv != nil {
		return srv.TLSConnPolicies
	}
	return nil
}

// CurrentRoute returns the top-level route of the HTTP server whose
// handlers ctx is provisioning (a handler's, or a nested matcher's,
// Provision), or nil.
//
// It relies on the order of the http app's provisioning: the top-level
// routes' matchers first (so MatcherSets holds the host matchers), then
// each route's handlers in turn, its HandlersRaw cleared once they are
// loaded, the error routes last. So the route being provisioned is the
// first one that still has HandlersRaw.
func CurrentRoute(ctx caddy.Context) *caddyhttp.Route {
	srv := HTTPServer(ctx)
	if srv == nil {
		return nil
	}
	lists := []caddyhttp.RouteList{srv.Routes}
	if srv.Errors != nil {
		lists = append(lists, srv.Errors.Routes)
	}
	for _, list := range lists {
		for i := range list {
			if len(list[i].HandlersRaw) > 0 {
				return &list[i]
			}
		}
	}
	return nil
}

// WrapperRoute returns the route of a caddy-l4 listener wrapper (routes
// that run before an HTTP server's TLS) whose matcher ctx provisions,
// when that matcher is a top-level one of the route: not negated by
// `not`, not nested in a subroute (its parent module is the wrapper
// itself). Nil otherwise.
//
// It relies on the order of caddy-l4's route provisioning: the routes in
// turn, each route's MatcherSetsRaw cleared once its matchers are loaded.
// So the route being provisioned is the first one that still has
// MatcherSetsRaw, and the matcher can read its siblings there.
func WrapperRoute(ctx caddy.Context) *layer4.Route {
	mods := ctx.Modules()
	if len(mods) < 2 {
		return nil
	}
	lw, ok := mods[len(mods)-2].(*layer4.ListenerWrapper)
	if !ok {
		return nil
	}
	for _, r := range lw.Routes {
		if r != nil && len(r.MatcherSetsRaw) > 0 {
			return r
		}
	}
	return nil
}
