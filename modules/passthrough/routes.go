package passthrough

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/mholt/caddy-l4/layer4"
)

// Layer4Routes generates the caddy-l4 routes for the block. beside says
// whether an HTTP server takes what no route takes (the listener-wrapper
// form).
func (b *Block) Layer4Routes(beside bool) (layer4.RouteList, error) {
	for _, rs := range append(slices.Clone(b.Routes), b.DefaultRoute) {
		if rs != nil && rs.opts.set["max_fails"] && !rs.opts.set["fail_duration"] {
			return nil, fmt.Errorf("passthrough: route at %s: max_fails needs fail_duration (how long a failure counts)", rs.Where)
		}
	}
	var routes layer4.RouteList
	addRoute := func(m *MatchClientHello, excluded []string, handler caddy.Module) {
		match := caddy.ModuleMap{"clienthello": caddyconfig.JSON(m, nil)}
		if len(excluded) > 0 {
			match["not"] = caddyconfig.JSON([]caddy.ModuleMap{{"clienthello": caddyconfig.JSON(&MatchClientHello{SNI: excluded}, nil)}}, nil)
		}
		routes = append(routes, &layer4.Route{
			MatcherSetsRaw: []caddy.ModuleMap{match},
			HandlersRaw:    []json.RawMessage{caddyconfig.JSONModuleObject(handler, "handler", handler.CaddyModule().ID.Name(), nil)},
		})
	}
	if b.RefuseTLS12 {
		addRoute(&MatchClientHello{MaxVersion: "tls1.2"}, nil, &Refuse{Route: "refuse_tls12", Alert: "protocol_version"})
	}
	// routes restricted by ALPN first: they take their protocols of a
	// name before a route for the same name without ALPN takes the rest
	ordered := slices.Clone(b.Routes)
	slices.SortStableFunc(ordered, func(x, y *RouteSpec) int { return min(len(y.ALPN), 1) - min(len(x.ALPN), 1) })
	for _, rs := range ordered {
		addRoute(&MatchClientHello{SNI: lowerAll(rs.Names), ALPN: rs.ALPN}, b.exclusions(rs), b.handler(rs))
	}
	def := b.Default
	if def == "" && !beside {
		def = "refuse"
	}
	if def == "" || def == "terminate" {
		return routes, nil // an HTTP server takes the rest
	}
	// the rest, but Caddy's own names beside an HTTP server
	defMatch := new(MatchClientHello)
	if beside {
		defMatch.ServedByCaddy = new(bool)
	}
	var handler caddy.Module = &Refuse{Route: "default", Alert: "unrecognized_name"}
	if def == "upstream" {
		handler = b.handler(b.DefaultRoute)
	}
	addRoute(defMatch, nil, handler)
	return routes, nil
}

// exclusions lists exact names of other routes that rs's wildcards
// cover, so that the more specific route wins whatever the order. An
// exact name whose route is restricted by ALPN is not excluded from an
// unrestricted wildcard: that route comes first for its protocols, and
// the wildcard takes the rest.
func (b *Block) exclusions(rs *RouteSpec) []string {
	var out []string
	for _, w := range rs.Names {
		wn, _ := normalizeName(w)
		if !strings.HasPrefix(wn, "*.") {
			continue
		}
		for _, other := range b.Routes {
			if other == rs || (len(rs.ALPN) == 0 && len(other.ALPN) > 0) {
				continue
			}
			for _, n := range other.Names {
				nn, _ := normalizeName(n)
				if !strings.HasPrefix(nn, "*.") && matchPattern(wn, nn) && !slices.Contains(out, nn) {
					out = append(out, nn)
				}
			}
		}
	}
	return out
}

func lowerAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(n)
	}
	return out
}
