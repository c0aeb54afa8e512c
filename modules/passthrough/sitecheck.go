package passthrough

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/caddyinternals"
)

// checkSites checks, at load (JSON configs too), a clienthello matcher
// of a top-level route of a layer4 listener wrapper against the sites of
// the HTTP server behind it: a name it takes for every client hides the
// site (refused); one it takes for some ALPN protocols skips a site's
// client_auth (a warning). A matcher with max_version or served_by_caddy
// does not take every client and is not judged.
func (m *MatchClientHello) checkSites(ctx caddy.Context) error {
	if len(m.SNI) == 0 || m.MaxVersion != "" || m.ServedByCaddy != nil {
		return nil
	}
	route := caddyinternals.WrapperRoute(ctx)
	srv := caddyinternals.HTTPServer(ctx)
	if route == nil || srv == nil {
		return nil
	}
	excluded := excludedBeside(route, m)
	name := routeName(route)
	for i := range srv.Routes {
		for _, host := range caddyinternals.RouteHosts(&srv.Routes[i]) {
			host = strings.ToLower(host)
			if slices.Contains(excluded, host) {
				continue
			}
			for _, sni := range m.SNI {
				norm, _ := normalizeName(sni)
				if len(m.ALPN) == 0 {
					if matchPattern(norm, host) {
						return fmt.Errorf("passthrough route %q takes server name %q, which the site %q on the same HTTP server also serves: every connection for that name is passed through, so the site can never be reached; remove the name from the passthrough route, restrict the route with `alpn`, or serve the site on another port", name, sni, host)
					}
					continue
				}
				if overlaps(norm, host) && caddyinternals.AsksClientCert(caddyinternals.PolicyForHost(srv.TLSConnPolicies, host)) {
					m.logger.Warn(msgALPNBypass,
						zap.String("route", name), zap.String("server_name", sni), zap.Strings("alpn", m.ALPN), zap.String("site", host),
						zap.String("fix", "if the upstream must only see authenticated clients, have it verify client certificates itself, or drop the name from the route"))
				}
			}
		}
	}
	return nil
}

// msgALPNBypass is the load warning of an ALPN-restricted route that
// takes the name of a site with client_auth.
const msgALPNBypass = "passthrough route takes the name of a site that requires a client certificate: a client that lists one of the route's ALPN protocols anywhere in its offer reaches the route's upstream without the site's client_auth check"

// excludedBeside returns the exact names a `not` clienthello matcher
// excludes in the matcher set of route that holds m (the generated
// routes exclude the names of more specific routes that way).
func excludedBeside(route *layer4.Route, m *MatchClientHello) []string {
	var out []string
	for _, set := range route.MatcherSetsRaw {
		var own MatchClientHello
		if json.Unmarshal(set["clienthello"], &own) != nil || !slices.Equal(own.SNI, m.SNI) || !slices.Equal(own.ALPN, m.ALPN) {
			continue
		}
		var not []caddy.ModuleMap
		if json.Unmarshal(set["not"], &not) != nil {
			continue
		}
		for _, n := range not {
			var ex MatchClientHello
			if json.Unmarshal(n["clienthello"], &ex) == nil && len(ex.ALPN) == 0 && ex.MaxVersion == "" && ex.ServedByCaddy == nil {
				out = append(out, lowerAll(ex.SNI)...)
			}
		}
	}
	return out
}

// routeName is the route name of a route's passthrough handler, or the
// name of its first handler.
func routeName(route *layer4.Route) string {
	for _, raw := range route.HandlersRaw {
		var h struct {
			Handler string `json:"handler"`
			Route   string `json:"route"`
		}
		if json.Unmarshal(raw, &h) == nil {
			if h.Route != "" {
				return h.Route
			}
			return h.Handler
		}
	}
	return "(no handler)"
}
