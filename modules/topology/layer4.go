package topology

import (
	"slices"
	"strings"
)

// l4State is what a layer-4 handler chain did so far to a connection.
type l4State struct {
	terminated bool // a tls handler decrypted it
}

// layer4Servers analyses caddy-l4's servers (at path, of the layer4 or
// passthrough app): raw TCP listeners whose routes pass TLS through (proxy
// without tls), terminate it (the tls handler), or re-encrypt to
// upstreams.
func (a *analyzer) layer4Servers(servers map[string]any, path, appName string) {
	for _, name := range keys(servers) {
		srv := obj(servers[name])
		sp := field(path, name)
		for _, addr := range orElse(strs(srv["listen"]), "(none)") {
			l := &Listener{App: appName, Server: name, Path: sp, Address: addr, Inbound: ModeTCP, Routes: []*Route{}}
			routes := arr(srv["routes"])
			a.l4Routes(l, routes, field(sp, "routes"))
			a.rep.Listeners = append(a.rep.Listeners, l)
			if passesThrough(l) && !hasCatchAll(routes) {
				l.Notes = append(l.Notes, "no default route: connections matching no route are closed")
				a.finding(SeverityWarning, KindPassthroughNoDef, field(sp, "routes"),
					"layer-4 server "+name+" on "+addr+" passes TLS through by SNI but has no default route: a client sending another name, or none (an IP address, an old client), is disconnected without a TLS alert",
					"add a last route without a matcher: proxy to a default backend, or to a Caddy site that answers with a clear error")
			}
		}
	}
}

// listenerWrappers describes an HTTP server's listener wrappers, and
// analyses a caddy-l4 `layer4` wrapper (routes run on the raw connection
// before Caddy's HTTP server; unmatched connections fall through to it).
func (a *analyzer) listenerWrappers(name string, srv map[string]any, path string, listen []string) []string {
	var notes []string
	wp := field(path, "listener_wrappers")
	for i, w := range arr(srv["listener_wrappers"]) {
		w, p := obj(w), index(wp, i)
		switch kind := str(w["wrapper"]); kind {
		case "tls":
		case "http_redirect":
			notes = append(notes, "plain HTTP on the HTTPS port is redirected to HTTPS")
		case "proxy_protocol":
			notes = append(notes, "reads the PROXY protocol header from "+strings.Join(orElse(strs(w["allow"]), "anyone"), ", "))
		case "layer4":
			for _, addr := range orElse(listen, "(none)") {
				l := &Listener{App: "layer4", Server: name + " (listener_wrappers)", Path: p, Address: addr, Inbound: ModeTCP,
					Notes: []string{"runs before the HTTP server; connections matching no route fall through to it"}, Routes: []*Route{}}
				a.l4Routes(l, arr(w["routes"]), field(p, "routes"))
				a.rep.Listeners = append(a.rep.Listeners, l)
			}
			notes = append(notes, "layer-4 routes run first (listener wrapper layer4)")
		default:
			a.notAnalysed(p, "caddy.listeners."+kind, "listener wrapper not analysed")
		}
	}
	return notes
}

// orElse is list, or def alone when list is empty.
func orElse(list []string, def string) []string {
	if len(list) == 0 {
		return []string{def}
	}
	return list
}

// l4Routes analyses the routes of a layer-4 server or wrapper.
func (a *analyzer) l4Routes(l *Listener, routes []any, path string) {
	for i, r := range routes {
		r, rp := obj(r), index(path, i)
		route := &Route{Path: rp, Inbound: Inbound{Mode: ModeTCP}}
		route.Hosts, route.Match, route.Inbound.PeerPatterns = a.l4Matchers(arr(r["match"]), field(rp, "match"))
		if slices.Contains(route.Match, "tls") || len(route.Hosts) > 0 {
			// a TLS ClientHello was read: unless a tls handler
			// terminates it, TLS passes through
			route.Inbound.Mode = ModePassthrough
		}
		a.l4Handlers(route, &l4State{}, arr(r["handle"]), field(rp, "handle"), nil)
		l.Routes = append(l.Routes, route)
	}
}

// l4Matchers splits layer-4 matcher sets into SNI names, other matchers,
// and peer identity patterns.
func (a *analyzer) l4Matchers(sets []any, path string) (hosts, other, peers []string) {
	for i, s := range sets {
		set := obj(s)
		for _, name := range keys(set) {
			mp := field(index(path, i), name)
			switch name {
			case "tls", "clienthello": // caddy-l4's, the suite's
				var sni, conds []string
				var err error
				if name == "tls" {
					sni = strs(obj(set[name])["sni"])
				} else if sni, conds, err = clientHelloMatcher(set[name]); err != nil {
					a.notAnalysed(mp, "layer4.matchers.clienthello", err.Error())
				}
				hosts = appendNew(hosts, sni...)
				other = append(appendNew(other, "tls"), conds...)
			case "peer":
				peers = append(peers, a.peerPatterns("layer4.matchers.peer", set[name], mp)...)
				other = append(other, "peer")
			default:
				other = appendNew(other, name)
			}
		}
	}
	return hosts, other, peers
}

// passiveL4Handlers change no TLS property of a connection.
var passiveL4Handlers = []string{"echo", "throttle", "tee", "close"}

func (a *analyzer) l4Handlers(route *Route, st *l4State, handlers []any, path string, when []string) {
	for i, h := range handlers {
		h, hp := obj(h), index(path, i)
		name := str(h["handler"])
		route.Handlers = appendNew(route.Handlers, name)
		switch {
		case name == "tls":
			a.finding(SeverityInfo, KindL4TLSNoResume, hp,
				"caddy-l4's tls handler (in the pinned version) builds a new TLS config for every connection: the session tickets it issues can never be redeemed, so every reconnect is a full handshake, and a client that sends nothing is never timed out",
				"use the suite's terminate_tls handler instead: the same connection policies, with sessions that resume and a handshake_timeout")
			a.terminate(route, st, arr(h["connection_policies"]), field(hp, "connection_policies"))
		case name == "proxy":
			a.l4Proxy(route, st, h, hp, when)
		case name == "proxy_protocol":
			route.Match = append(route.Match, "reads PROXY protocol")
		case name == "subroute":
			for j, r := range arr(h["routes"]) {
				r, rp := obj(r), index(field(hp, "routes"), j)
				hosts, other, peers := a.l4Matchers(arr(r["match"]), field(rp, "match"))
				sub := *st
				a.l4Handlers(route, &sub, arr(r["handle"]), field(rp, "handle"), nestedWhen(route, when, "sni", hosts, other, peers))
			}
		case a.suiteL4Handler(route, st, name, h, hp, when):
		case slices.Contains(passiveL4Handlers, name):
		default:
			a.notAnalysed(hp, "layer4.handlers."+name, "layer-4 handler not analysed")
		}
	}
}

// terminate reads a layer-4 handler that terminates TLS (caddy-l4's tls,
// the suite's terminate_tls) with the connection policies pols (at path).
func (a *analyzer) terminate(route *Route, st *l4State, pols []any, path string) {
	st.terminated = true
	if len(pols) == 0 {
		pols = []any{map[string]any{}}
	}
	peers := route.Inbound.PeerPatterns
	route.Inbound = a.tlsInbound(route.Hosts, pols, path, route.Path, false)
	route.Inbound.PeerPatterns = peers
}

// l4Proxy analyses a caddy-l4 proxy handler: one outbound leg per upstream.
func (a *analyzer) l4Proxy(route *Route, st *l4State, h map[string]any, path string, when []string) {
	for i, u := range arr(h["upstreams"]) {
		u, up := obj(u), index(field(path, "upstreams"), i)
		out := &Outbound{Path: up, Handler: "layer4 proxy", When: when, Upstreams: append([]string{}, strs(u["dial"])...), Mode: OutTCP}
		if pp := str(h["proxy_protocol"]); pp != "" {
			out.ProxyProtocol = pp
			out.Notes = append(out.Notes, "sends PROXY protocol "+pp)
		}
		a.upstreamTLS(out, obj(u["tls"]), field(up, "tls"))
		route.Outbound = append(route.Outbound, out)
		if !st.terminated {
			if route.Inbound.Mode == ModeTCP || route.Inbound.Mode == ModePassthrough {
				route.Inbound.PassthroughTo = append(route.Inbound.PassthroughTo, out.Upstreams...)
			}
			continue
		}
		if out.Mode == OutTCP {
			sev, msg := SeverityWarning, "TLS ends at Caddy (layer-4 tls handler) and the bytes go on unencrypted to "+strings.Join(out.Upstreams, ", ")
			if allLoopback(out.Upstreams) {
				sev, msg = SeverityInfo, msg+" (loopback: the leg stays on this host)"
			}
			a.finding(sev, KindPlaintextLeg, up, msg,
				"re-encrypt to the upstream: give the proxy upstream a `tls` block with a trust pool (`tls_trust_pool file internal-ca.pem`), or pass TLS through instead of terminating it")
		}
	}
}

// passesThrough reports whether a layer-4 listener has a route that
// forwards TLS without decrypting it.
func passesThrough(l *Listener) bool {
	return slices.ContainsFunc(l.Routes, func(r *Route) bool {
		return r.Inbound.Mode == ModePassthrough && len(r.Inbound.PassthroughTo) > 0
	})
}

// hasCatchAll reports whether a route list has a route with no matcher.
func hasCatchAll(routes []any) bool {
	for _, r := range routes {
		sets := arr(obj(r)["match"])
		if len(sets) == 0 || slices.ContainsFunc(sets, func(s any) bool { return catchAllSet(obj(s)) }) {
			return true
		}
	}
	return false
}
