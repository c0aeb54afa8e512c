package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/trustline/trustline/modules/topology"
)

// The trustline_topology directive: the topology report of the running
// config served from a site. It ends the route, like respond, and is
// ordered just before it, so that access control (basic_auth,
// peer_authorize, forward_auth) runs first.
func init() {
	httpcaddyfile.RegisterHandlerDirective("trustline_topology", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		m := new(topology.Handler)
		if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
			return nil, err
		}
		return m, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("trustline_topology", httpcaddyfile.Before, "respond")
}
