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
	addRoute := func(match caddy.ModuleMap, handler any, name string) {
		r := &layer4.Route{HandlersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(handler, "handler", name, nil)}}
		if match != nil {
			r.MatcherSetsRaw = []caddy.ModuleMap{match}
		}
		routes = append(routes, r)
	}
	if b.RefuseTLS12 {
		addRoute(caddy.ModuleMap{"clienthello": caddyconfig.JSON(&MatchClientHello{MaxVersion: "tls1.2"}, nil)},
			&Refuse{Route: "refuse_tls12", Alert: "protocol_version"}, "refuse")
	}
	ordered := make([]*RouteSpec, 0, len(b.Routes))
	for _, rs := range b.Routes {
		if len(rs.ALPN) > 0 {
			ordered = append(ordered, rs)
		}
	}
	for _, rs := range b.Routes {
		if len(rs.ALPN) == 0 {
			ordered = append(ordered, rs)
		}
	}
	for _, rs := range ordered {
		m := &MatchClientHello{SNI: lowerAll(rs.Names), ALPN: rs.ALPN}
		match := caddy.ModuleMap{"clienthello": caddyconfig.JSON(m, nil)}
		if excl := b.exclusions(rs); len(excl) > 0 {
			match["not"] = caddyconfig.JSON([]caddy.ModuleMap{{"clienthello": caddyconfig.JSON(&MatchClientHello{SNI: excl}, nil)}}, nil)
		}
		addRoute(match, b.handler(rs), "passthrough")
	}
	def := b.Default
	if def == "" {
		def = "terminate"
		if !beside {
			def = "refuse"
		}
	}
	var defMatch *MatchClientHello
	if def != "terminate" {
		defMatch = new(MatchClientHello)
		if beside {
			f := false
			defMatch.ServedByCaddy = &f
		}
	}
	switch def {
	case "refuse":
		addRoute(caddy.ModuleMap{"clienthello": caddyconfig.JSON(defMatch, nil)}, &Refuse{Route: "default", Alert: "unrecognized_name"}, "refuse")
	case "upstream":
		addRoute(caddy.ModuleMap{"clienthello": caddyconfig.JSON(defMatch, nil)}, b.handler(b.DefaultRoute), "passthrough")
	}
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

// ListenerWrapper generates the caddy-l4 listener wrapper for the block.
func (b *Block) ListenerWrapper() (*layer4.ListenerWrapper, error) {
	routes, err := b.Layer4Routes(true)
	if err != nil {
		return nil, err
	}
	return &layer4.ListenerWrapper{Routes: routes, MatchingTimeout: b.MatchingTimeout}, nil
}

// Server generates the caddy-l4 server of the standalone form.
func (b *Block) Server() (*layer4.Server, error) {
	routes, err := b.Layer4Routes(false)
	if err != nil {
		return nil, err
	}
	return &layer4.Server{Listen: []string{b.Address}, Routes: routes, MatchingTimeout: b.MatchingTimeout}, nil
}
