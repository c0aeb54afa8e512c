package peer

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The peer directives. (The `peer` matcher, the layer-4 `peer` matcher
// and `verifier peer` need no registration: Caddy finds them by module
// name.)
//
// Order: all three run first, right after `tracing` and before `map`:
//   - peer_identity publishes {peer.*} so that map, vars, header, rewrite,
//     respond and log_append can use it;
//   - forward_peer_identity strips forged identity headers before anything
//     can read, copy or forward them: forward_auth (which copies request
//     headers to the auth service), request_header, templates and
//     reverse_proxy all come later (and so does the error route that a
//     denial leads to), while an explicit request_header still gets the
//     last word;
//   - peer_authorize denies before any other handler has done any work or
//     read the body, like an access rule in front of the site.
func init() {
	httpcaddyfile.RegisterHandlerDirective("peer_identity", parseHandler[Publish])
	httpcaddyfile.RegisterHandlerDirective("peer_authorize", parseHandler[Authorize])
	httpcaddyfile.RegisterHandlerDirective("forward_peer_identity", parseHandler[ForwardHeaders])
	httpcaddyfile.RegisterDirectiveOrder("peer_identity", httpcaddyfile.Before, "map")
	httpcaddyfile.RegisterDirectiveOrder("forward_peer_identity", httpcaddyfile.Before, "map")
	httpcaddyfile.RegisterDirectiveOrder("peer_authorize", httpcaddyfile.Before, "map")
}

// parseHandler parses the directive into a new T.
func parseHandler[T any, P interface {
	*T
	caddyhttp.MiddlewareHandler
	caddyfile.Unmarshaler
}](h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := P(new(T))
	return m, m.UnmarshalCaddyfile(h.Dispenser)
}
