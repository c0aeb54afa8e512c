package caddyinternals

import (
	"crypto/tls"
	"encoding/json"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

// RouteHosts returns the names of a route's host matchers, read from its
// provisioned MatcherSets (the http app provisions the top-level routes'
// matchers before anything else of the server). Empty: the route is
// not limited to names.
func RouteHosts(r *caddyhttp.Route) []string {
	var hosts []string
	for _, set := range r.MatcherSets {
		for _, m := range set {
			switch h := m.(type) {
			case *caddyhttp.MatchHost:
				hosts = append(hosts, *h...)
			case caddyhttp.MatchHost:
				hosts = append(hosts, h...)
			}
		}
	}
	return hosts
}

// PolicyForHost returns the first of an HTTP server's TLS connection
// policies that a handshake for host may select, read before the policies
// are provisioned (their matchers still raw JSON, as they are while the
// server's listener wrappers and routes provision): its `sni` matcher
// decides, with Caddy's own matching; any other handshake matcher is
// taken as matching. Nil when none can.
func PolicyForHost(policies caddytls.ConnectionPolicies, host string) *caddytls.ConnectionPolicy {
	hello := &tls.ClientHelloInfo{ServerName: host}
	for _, p := range policies {
		if p == nil {
			continue
		}
		raw, ok := p.MatchersRaw["sni"]
		if !ok {
			return p
		}
		var sni caddytls.MatchServerName
		if json.Unmarshal(raw, &sni) == nil && sni.Match(hello) {
			return p
		}
	}
	return nil
}

// AsksClientCert reports whether a connection policy has client_auth
// configured, i.e. asks the client for a certificate.
func AsksClientCert(p *caddytls.ConnectionPolicy) bool {
	return p != nil && p.ClientAuthentication != nil && p.ClientAuthentication.Active()
}
