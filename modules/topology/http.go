package topology

import (
	"net"
	"slices"
	"strconv"
	"strings"
)

// serverCtx is what the routes of one HTTP listener share.
type serverCtx struct {
	path       string
	inboundTLS bool
	autoCerts  bool // automatic HTTPS manages the certificates of its hosts
	policies   []any
	strip      *stripState
}

// httpApp analyses the http app's servers.
func (a *analyzer) httpApp(app map[string]any, path string) {
	a.httpPort, a.httpsPort = httpPorts(app)
	servers := obj(app["servers"])
	for _, name := range keys(servers) {
		a.httpServer(name, obj(servers[name]), field(field(path, "servers"), name))
	}
}

// httpPorts returns the http app's HTTP and HTTPS ports (80 and 443 by
// default).
func httpPorts(app map[string]any) (int, int) {
	port := func(key string, def int) int {
		if p, ok := num(app[key]); ok && p > 0 {
			return p
		}
		return def
	}
	return port("http_port", 80), port("https_port", 443)
}

// httpServer analyses one server: one Listener per listen address, since
// Caddy serves plain HTTP on the HTTP port even when TLS is on.
func (a *analyzer) httpServer(name string, srv map[string]any, path string) {
	listen := strs(srv["listen"])
	routes := arr(srv["routes"])
	policies := arr(srv["tls_connection_policies"])

	// what automatic HTTPS will do (Caddy adds a connection policy when the
	// routes name hosts, or when every listener is on the HTTPS port)
	auto := obj(srv["automatic_https"])
	tlsOn, autoNote := len(policies) > 0, ""
	if !tlsOn && !boolean(auto["disable"]) && anyPortOtherThan(listen, a.httpPort) {
		hosts := slices.DeleteFunc(topHosts(routes), func(h string) bool { return slices.Contains(strs(auto["skip"]), h) })
		switch {
		case len(hosts) > 0:
			tlsOn, autoNote = true, "TLS enabled by automatic HTTPS for "+strings.Join(hosts, ", ")
		case !anyPortOtherThan(listen, a.httpsPort):
			tlsOn, autoNote = true, "TLS enabled by automatic HTTPS (every listener is on the HTTPS port)"
		}
		if tlsOn {
			policies = []any{map[string]any{}}
		}
	}

	var trusted []string
	if tp := obj(srv["trusted_proxies"]); tp != nil {
		trusted = []string{"(" + str(tp["source"]) + " source)"}
		if str(tp["source"]) == "static" {
			trusted = strs(tp["ranges"])
		}
	}
	wrapperNotes := a.listenerWrappers(name, srv, path, listen)

	if len(listen) == 0 {
		a.rep.Listeners = append(a.rep.Listeners, &Listener{App: "http", Server: name, Path: path, Address: "(none)",
			Inbound: ModePlainHTTP, Notes: []string{"no listen address: the server accepts no connection"}, Routes: []*Route{}})
		return
	}
	for _, addr := range listen {
		l := &Listener{App: "http", Server: name, Path: path, Address: addr, Inbound: ModePlainHTTP, TrustedProxies: trusted, Routes: []*Route{}}
		onTLS := tlsOn && portOf(addr) != a.httpPort
		if onTLS {
			l.Inbound = "https"
		}
		if onTLS && autoNote != "" {
			l.Notes = append(l.Notes, autoNote)
		}
		if len(trusted) > 0 {
			l.Notes = append(l.Notes, "trusts X-Forwarded-For from "+strings.Join(trusted, ", "))
		}
		l.Notes = append(l.Notes, wrapperNotes...)
		sc := &serverCtx{path: path, inboundTLS: onTLS, policies: policies, strip: &stripState{},
			autoCerts: !boolean(auto["disable"]) && !boolean(auto["disable_certificates"])}
		base := sc.strip
		for i, r := range routes {
			sc.strip = base.clone()
			l.Routes = append(l.Routes, a.httpRoute(sc, obj(r), index(field(path, "routes"), i)))
			if carries(obj(r)) {
				base = sc.strip
			}
		}
		a.rep.Listeners = append(a.rep.Listeners, l)
		if !onTLS {
			a.plainListener(l, routes)
		}
	}
}

// plainListener adds the plaintext-leg finding for a listener that serves
// plain HTTP (other than Caddy's HTTP->HTTPS redirects).
func (a *analyzer) plainListener(l *Listener, routes []any) {
	if len(routes) == 0 || redirectOnly(routes) {
		if len(routes) > 0 {
			l.Notes = append(l.Notes, "redirects to HTTPS")
		}
		return
	}
	l.Notes = append(l.Notes, "TLS termination: off at Caddy (no server certificate here: if a load balancer terminates TLS, it holds the certificate)")
	msg := "listener " + l.Address + " serves plain HTTP: if a load balancer terminates TLS in front of it, the leg to Caddy is plaintext; if not, clients talk to it in clear"
	if len(l.TrustedProxies) > 0 {
		msg = "listener " + l.Address + " receives plain HTTP from a proxy it trusts (" + strings.Join(l.TrustedProxies, ", ") + "): TLS ended at the load balancer, and the leg to Caddy is plaintext: it can be read and altered on the way, and whoever reaches this address can call it directly"
	}
	a.finding(SeverityWarning, KindPlaintextLeg, l.Path, msg,
		"re-encrypt the leg: give this site a certificate (`tls internal`, or one from your internal CA) and have the load balancer connect over TLS, verifying it and presenting a client certificate that client_auth checks (see examples/lb-reencrypt); accept plaintext only on an isolated network, as a documented risk")
}

// redirectOnly reports whether every route only redirects (the server
// Caddy's automatic HTTPS makes for port 80).
func redirectOnly(routes []any) bool {
	for _, r := range routes {
		hs := arr(obj(r)["handle"])
		if len(hs) != 1 {
			return false
		}
		h := obj(hs[0])
		if str(h["handler"]) != "static_response" || len(strs(obj(h["headers"])["Location"])) == 0 {
			return false
		}
	}
	return true
}

// topHosts returns the host matchers of a server's top-level routes.
func topHosts(routes []any) []string {
	var hosts []string
	for _, r := range routes {
		for _, set := range arr(obj(r)["match"]) {
			hosts = appendNew(hosts, strs(obj(set)["host"])...)
		}
	}
	return hosts
}

func anyPortOtherThan(listen []string, port int) bool {
	return slices.ContainsFunc(listen, func(l string) bool { return portOf(l) != port })
}

// portOf returns the (first) port of a listen address, or -1.
func portOf(addr string) int {
	if i := strings.Index(addr, "/"); i >= 0 && strings.Contains(addr[:i], "unix") {
		return -1
	}
	if _, rest, ok := strings.Cut(addr, "/"); ok && !strings.Contains(addr, ":") {
		addr = rest
	}
	if i := strings.Index(addr, "://"); i >= 0 {
		addr = addr[i+3:]
	} else if i := strings.Index(addr, "/"); i >= 0 {
		addr = addr[i+1:]
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	port, _, _ = strings.Cut(port, "-")
	p, err := strconv.Atoi(port)
	if err != nil {
		return -1
	}
	return p
}

// httpRoute analyses one top-level route: its hosts, its inbound leg (TLS
// or not, which certificate, which client_auth), and the handlers inside.
func (a *analyzer) httpRoute(sc *serverCtx, r map[string]any, path string) *Route {
	route := &Route{Path: path}
	hosts, other, peers := a.httpMatchers(arr(r["match"]), field(path, "match"))
	route.Hosts, route.Match = hosts, other
	if sc.inboundTLS {
		route.Inbound = a.tlsInbound(hosts, sc.policies, field(sc.path, "tls_connection_policies"), path, sc.autoCerts)
	} else {
		route.Inbound = Inbound{Mode: ModePlainHTTP}
	}
	route.Inbound.PeerPatterns = peers
	a.httpHandlers(sc, route, arr(r["handle"]), field(path, "handle"), nil)
	return route
}

// httpMatchers splits a route's matcher sets into hosts, a summary of the
// other matchers, and peer identity patterns.
func (a *analyzer) httpMatchers(sets []any, path string) (hosts, other, peers []string) {
	for i, s := range sets {
		set := obj(s)
		for _, name := range keys(set) {
			switch name {
			case "host":
				hosts = appendNew(hosts, strs(set[name])...)
			case "peer":
				peers = append(peers, a.peerPatterns("http.matchers.peer", set[name], field(index(path, i), name))...)
				other = append(other, "peer")
			default:
				desc := name
				if vals := strs(set[name]); len(vals) > 0 {
					desc += " " + strings.Join(vals, " ")
				}
				other = append(other, short(desc))
			}
		}
	}
	return hosts, other, peers
}

// tlsInbound says how a TLS route's connections are terminated: the
// connection policy that applies to its hosts (by SNI), the certificate,
// and client_auth.
func (a *analyzer) tlsInbound(hosts []string, policies []any, polPath, usedBy string, autoCerts bool) Inbound {
	in := Inbound{Mode: ModeTLS}
	var how []string
	for _, host := range orElse(hosts, "") {
		pi, pol := selectPolicy(policies, host)
		if pi < 0 {
			how = append(how, "no connection policy matches "+host+": handshakes fail")
			continue
		}
		desc, ids := a.serverCertFor(host, obj(pol["certificate_selection"]), usedBy, autoCerts)
		how = appendNew(how, desc)
		in.Certificates = appendNew(in.Certificates, ids...)
		// the first policy with client_auth gives the leg's
		if ca := obj(pol["client_authentication"]); ca != nil && in.ClientAuth == nil {
			in.ClientAuth = a.clientAuth(ca, field(index(polPath, pi), "client_authentication"))
			in.Mode = ModeMTLS
		}
	}
	in.Certificate = strings.Join(how, "; ")
	return in
}

// selectPolicy returns the first connection policy whose sni matcher (if
// any) covers host. Other handshake matchers are taken as matching.
func selectPolicy(policies []any, host string) (int, map[string]any) {
	first := -1
	for i, p := range policies {
		pol := obj(p)
		if pol == nil {
			continue
		}
		if first < 0 {
			first = i
		}
		sni := strs(obj(pol["match"])["sni"])
		if len(sni) == 0 {
			return i, pol
		}
		for _, s := range sni {
			if host != "" && nameMatches(s, host) {
				return i, pol
			}
		}
	}
	// a route for any host gets whichever policy the client's SNI picks
	if host == "" && first >= 0 {
		return first, obj(policies[first])
	}
	return -1, nil
}

// passiveHandlers are the standard HTTP handlers that make no leg of their
// own and change no TLS property.
var passiveHandlers = []string{
	"acme_server", "authentication", "copy_response", "copy_response_headers", "encode", "error",
	"file_server", "intercept", "invoke", "log_append", "map", "metrics", "push", "request_body",
	"rewrite", "static_response", "templates", "timeouts", "tracing", "vars",
}

// httpHandlers walks a handler chain: subroutes (recursively),
// reverse_proxy (an outbound leg), headers (identity header stripping),
// and the rest.
func (a *analyzer) httpHandlers(sc *serverCtx, route *Route, handlers []any, path string, when []string) {
	for i, h := range handlers {
		h, hp := obj(h), index(path, i)
		name := str(h["handler"])
		route.Handlers = appendNew(route.Handlers, name)
		switch {
		case name == "subroute":
			base := sc.strip
			for j, r := range arr(h["routes"]) {
				r := obj(r)
				sc.strip = base.clone()
				rp := index(field(hp, "routes"), j)
				hosts, other, peers := a.httpMatchers(arr(r["match"]), field(rp, "match"))
				a.httpHandlers(sc, route, arr(r["handle"]), field(rp, "handle"), nestedWhen(route, when, "host", hosts, other, peers))
				if carries(r) {
					base = sc.strip
				}
			}
			sc.strip = base
			for j, r := range arr(obj(h["errors"])["routes"]) {
				rp := index(field(field(hp, "errors"), "routes"), j)
				a.httpHandlers(sc, route, arr(obj(r)["handle"]), field(rp, "handle"), append(slices.Clone(when), "on error"))
			}
		case name == "reverse_proxy":
			route.Outbound = append(route.Outbound, a.reverseProxy(sc, h, hp, when))
		case name == "headers":
			sc.strip.headersHandler(h)
		case a.suiteHandler(sc, route, name, h, hp):
		case slices.Contains(passiveHandlers, name):
		default:
			a.notAnalysed(hp, "http.handlers."+name, "handler not analysed")
		}
	}
}

// nestedWhen is what leads to a nested route: the conditions before it,
// its other matchers, its hosts (by: "host", "sni"); its peer patterns go
// to the route.
func nestedWhen(route *Route, when []string, by string, hosts, other, peers []string) []string {
	w := append(slices.Clone(when), other...)
	for _, host := range hosts {
		w = append(w, by+" "+host)
	}
	route.Inbound.PeerPatterns = append(route.Inbound.PeerPatterns, peers...)
	return w
}

// carries reports whether what a route does to the request reaches the
// routes after it: it is not terminal and not one of a group (of which
// only the first matching route runs).
func carries(r map[string]any) bool {
	return !boolean(r["terminal"]) && str(r["group"]) == ""
}
