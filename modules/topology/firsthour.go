package topology

import (
	"errors"
	"slices"
	"strings"

	"github.com/trustline/trustline/modules/truststore"
)

// Findings for the mistakes that pass Caddy's own checks and then lock
// every client out, or let some in unchecked (issue 22): the report judges
// a config file before it is loaded, and a running config's report keeps
// saying what its load warned about.
const (
	// KindLiveTrustMisuse: a client_auth that live_trust cannot work in
	// (also refused at load: truststore.CheckClientAuth).
	KindLiveTrustMisuse = "live_trust_misconfigured"
	// KindPeerNoClientAuth: peer_authorize, forward_peer_identity or a
	// peer matcher on a route whose site never asks for a client
	// certificate (also a load warning).
	KindPeerNoClientAuth = "peer_without_client_auth"
	// KindPassthroughHidesSite: a passthrough route that takes, for every
	// client, the name of a site of the same listener (also refused at
	// load).
	KindPassthroughHidesSite = "passthrough_hides_site"
	// KindALPNBypassesClientAuth: an ALPN-restricted passthrough route on
	// the name of a site with client_auth (also a load warning).
	KindALPNBypassesClientAuth = "passthrough_bypasses_client_auth"
)

// liveTrustUse adds the finding of a client_auth (at path, with the
// effective mode, whether crypto/tls gets a trust pool and the names of
// its verifiers) that live_trust cannot work in.
func (a *analyzer) liveTrustUse(path, mode string, hasCA bool, names []string) {
	var ce *truststore.ClientAuthError
	if errors.As(truststore.CheckClientAuth(mode, hasCA, names), &ce) {
		a.finding(SeverityError, KindLiveTrustMisuse, path, "client_auth: "+ce.Problem, ce.Fix)
	}
}

// firstHourFindings runs over the analysed listeners: routes that read a
// client identity their site never asks for, and passthrough routes in
// front of an HTTP server that take its sites' names.
func (a *analyzer) firstHourFindings() {
	for _, l := range a.rep.Listeners {
		for _, r := range l.Routes {
			a.peerWithoutClientAuth(r)
		}
		if l.App == "http" {
			a.passthroughBesideSites(l)
		}
	}
}

// peerWithoutClientAuth: a route with peer_authorize, peer_headers
// (forward_peer_identity) or a peer matcher whose inbound leg has no
// client_auth never sees an identity.
func (a *analyzer) peerWithoutClientAuth(r *Route) {
	if r.Inbound.ClientAuth != nil {
		return
	}
	var uses []string
	if slices.Contains(r.Handlers, "peer_authorize") {
		uses = append(uses, "peer_authorize refuses every request (403)")
	}
	if slices.ContainsFunc(r.Inbound.PeerPatterns, func(p string) bool { return !strings.HasPrefix(p, "peer_authorize:") }) {
		uses = append(uses, "the peer matcher never matches")
	}
	if slices.Contains(r.Handlers, "peer_headers") {
		uses = append(uses, "forward_peer_identity: the backend always gets empty identity headers")
	}
	if len(uses) == 0 {
		return
	}
	what := "this route"
	if len(r.Hosts) > 0 {
		what = "the route for " + strings.Join(r.Hosts, ", ")
	}
	a.finding(SeverityWarning, KindPeerNoClientAuth, r.Path,
		what+" never asks the client for a certificate (its TLS connection policy has no client_auth, or there is no TLS), yet reads the client's identity: "+strings.Join(uses, "; "),
		"add client_auth to the site's tls block, e.g. `tls { client_auth { verifier live_trust bundle /etc/tl/clients-ca.pem } }`, or remove what reads the identity")
}

// passthroughBesideSites judges the passthrough routes of the layer4
// listener wrapper of the HTTP listener l (the site-block passthrough)
// against l's sites.
func (a *analyzer) passthroughBesideSites(l *Listener) {
	for _, w := range a.rep.Listeners {
		if w.App != "layer4" || w.Address != l.Address || !strings.HasPrefix(w.Path, l.Path+".listener_wrappers[") {
			continue
		}
		for _, pr := range w.Routes {
			alpn, ok := takesEveryClient(pr)
			if !ok {
				continue
			}
			for _, site := range l.Routes {
				for _, host := range site.Hosts {
					for _, name := range pr.Hosts {
						switch {
						case alpn == "" && nameMatches(name, host):
							a.finding(SeverityError, KindPassthroughHidesSite, pr.Path,
								"passthrough takes the name "+name+" for every client, and the site "+host+" on the same listener ("+l.Address+") serves it: its connections are passed through to "+strings.Join(pr.Inbound.PassthroughTo, ", ")+", so the site can never be reached",
								"remove the name from the passthrough route, restrict the route with `alpn`, or serve the site on another port")
						case alpn != "" && site.Inbound.ClientAuth != nil && (nameMatches(name, host) || nameMatches(host, name)):
							a.finding(SeverityWarning, KindALPNBypassesClientAuth, pr.Path,
								"passthrough takes the name "+name+" for clients offering "+alpn+": a client that lists one of those protocols anywhere in its ALPN offer reaches "+strings.Join(pr.Inbound.PassthroughTo, ", ")+" without the client certificate check of the site "+host,
								"if the upstream must only see authenticated clients, have it verify client certificates itself, or drop the name from the route")
						}
					}
				}
			}
		}
	}
}

// takesEveryClient reports whether a layer-4 route passes TLS through
// for its names whatever else the ClientHello says, but for an ALPN
// restriction (returned as "alpn <protocols>"). A route with other
// conditions (a version limit, served-by-Caddy, a negation) is not
// judged.
func takesEveryClient(r *Route) (alpn string, ok bool) {
	if r.Inbound.Mode != ModePassthrough || len(r.Hosts) == 0 {
		return "", false
	}
	for _, m := range r.Match {
		switch {
		case m == "tls":
		case strings.HasPrefix(m, "alpn "):
			alpn = m
		default:
			return "", false
		}
	}
	return alpn, true
}
