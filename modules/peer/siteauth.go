package peer

import (
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/caddyinternals"
)

// warnNoClientCert warns, at load, when the HTTP site whose route is
// being provisioned never asks the client for a certificate (no
// client_auth in the TLS connection policy of any of its names, or no TLS
// at all): what (the handler or matcher) then never sees an identity, and
// consequence says what follows. A route for any name warns only when no
// policy of the server has client_auth. Outside an HTTP server, or where
// the route cannot be told, it says nothing; the topology report judges
// every route.
func warnNoClientCert(ctx caddy.Context, logger *zap.Logger, what, consequence string) {
	srv := caddyinternals.HTTPServer(ctx)
	if srv == nil {
		return
	}
	var hosts []string
	if r := caddyinternals.CurrentRoute(ctx); r != nil {
		hosts = caddyinternals.RouteHosts(r)
	}
	if len(hosts) == 0 {
		for _, p := range srv.TLSConnPolicies {
			if caddyinternals.AsksClientCert(p) {
				return
			}
		}
	}
	for _, h := range hosts {
		if caddyinternals.AsksClientCert(caddyinternals.PolicyForHost(srv.TLSConnPolicies, h)) {
			return
		}
	}
	logger.Warn(what+" is on a site that never asks for a client certificate (no client_auth in its TLS connection policy, or no TLS): "+consequence,
		zap.Strings("hosts", hosts),
		zap.String("fix", "add client_auth to the site's tls block, e.g. `tls { client_auth { verifier live_trust bundle /etc/tl/clients-ca.pem } }`"))
}
