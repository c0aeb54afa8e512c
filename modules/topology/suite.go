package topology

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"

	"github.com/trustline/trustline/modules/peer"
)

// The suite's own HTTP handlers, layer-4 handlers and listener wrappers
// that bear on TLS legs: the peer handlers (modules/peer) and the
// passthrough handlers (modules/passthrough). Each returns false for a
// module it does not know, which is then listed as not analysed.

// suiteHandler handles the peer HTTP handlers.
func (a *analyzer) suiteHandler(sc *serverCtx, route *Route, name string, h map[string]any, path string) bool {
	switch name {
	case "peer_identity":
		// publishes the verified identity as placeholders: no leg
	case "peer_authorize":
		desc := "peer_authorize: " + strings.Join(patternSummary(h), "; ")
		if boolean(h["shadow"]) {
			desc += " (shadow: logs, refuses nothing)"
		}
		route.Inbound.PeerPatterns = append(route.Inbound.PeerPatterns, desc)
	case "peer_headers":
		var fh peer.ForwardHeaders
		if err := decodeModule(h, &fh); err != nil {
			a.notAnalysed(path, "http.handlers."+name, "config does not decode: "+err.Error())
			break
		}
		sc.strip.peerHeaders(&fh)
	case "trustline_topology":
		// this package's report served from a site: no leg
	default:
		return false
	}
	return true
}

// peerHeaders records what the peer_headers handler (the directive
// forward_peer_identity) does: it removes the identity family
// (Client-Cert, Client-Cert-Chain, X-Forwarded-Client-Cert), every header
// it sets and every `strip` name from the client's request, then sets its
// headers from the verified identity: the RFC 9440 ones, XFCC, the PEM
// header and each configured `header`, whatever its name.
func (s *stripState) peerHeaders(h *peer.ForwardHeaders) {
	var sets []string
	if h.ClientCert {
		sets = append(sets, peer.HeaderClientCert)
		if h.ClientCertChain {
			sets = append(sets, peer.HeaderClientCertChain)
		}
	}
	if h.XFCC != nil {
		sets = append(sets, peer.HeaderXFCC)
	}
	if h.PEMHeader != "" {
		sets = append(sets, h.PEMHeader)
	}
	sets = append(sets, slices.Sorted(maps.Keys(h.Headers))...)
	s.deletes = append(s.deletes, lower([]string{peer.HeaderClientCert, peer.HeaderClientCertChain, peer.HeaderXFCC})...)
	s.deletes = append(s.deletes, lower(sets)...)
	s.deletes = append(s.deletes, lower(h.Strip)...)
	s.set = append(s.set, identityNames(sets)...)
	s.peerSet = append(s.peerSet, identityNames(sets)...)
	s.peerAll = append(s.peerAll, sets...)
}

// decodeModule reads a module's JSON (as the analysis holds it) into the
// module's own type: the report reads the suite's modules through their
// types, so a renamed field fails to compile or fails a test.
func decodeModule(m map[string]any, into any) error {
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, into)
}

// suiteL4Handler handles the passthrough module's layer-4 handlers.
func (a *analyzer) suiteL4Handler(route *Route, st *l4State, name string, h map[string]any, path string, when []string) bool {
	switch name {
	case "passthrough":
		out := &Outbound{Path: path, Handler: "passthrough", When: when, Upstreams: []string{}, Mode: OutTCP}
		for _, u := range arr(h["upstreams"]) {
			if d := str(obj(u)["dial"]); d != "" {
				out.Upstreams = append(out.Upstreams, d)
			}
		}
		if pp := str(h["proxy_protocol"]); pp != "" && pp != "off" {
			out.ProxyProtocol = pp
			out.Notes = append(out.Notes, "sends PROXY protocol "+pp+" (the client's address reaches the backend)")
			if pp == "v2" && boolean(h["proxy_protocol_identity"]) {
				out.IdentityTLVs = true
				out.Notes = append(out.Notes, "the verified client identity in PROXY v2 TLVs (PP2_TYPE_SSL with the CN and certificate, 0xE0 with the SPIFFE ID)")
			}
		}
		if t := obj(h["tls"]); t != nil {
			// "mTLS in, mTLS out": re-encrypted to the upstream
			a.upstreamTLS(out, t, field(path, "tls"))
			a.suiteIdentity(out, obj(t["client_identity"]), strs(t["upstream_identity"]), field(field(path, "tls"), "client_identity"))
		}
		route.Outbound = append(route.Outbound, out)
		if st.terminated && out.Mode == OutTCP {
			a.finding(SeverityWarning, KindPlaintextLeg, path,
				"TLS ends at Caddy (layer-4 tls handler) and the bytes go on unencrypted to "+strings.Join(out.Upstreams, ", "),
				"drop the tls handler to pass TLS through end to end, or re-encrypt with a proxy upstream `tls` block")
			return true
		}
		if route.Inbound.Mode == ModeTCP {
			route.Inbound.Mode = ModePassthrough
		}
		route.Inbound.PassthroughTo = append(route.Inbound.PassthroughTo, out.Upstreams...)
	case "refuse":
		route.Inbound.Mode = ModeRefused
		route.Inbound.Refusal = str(h["alert"])
		if route.Inbound.Refusal == "" {
			route.Inbound.Refusal = "(default alert)"
		}
	default:
		return false
	}
	return true
}

// suiteListenerWrapper: the passthrough module generates caddy-l4's
// `layer4` listener wrapper, handled with the other wrappers.
func (a *analyzer) suiteListenerWrapper(server, kind string, w map[string]any, path string, listen []string, notes *[]string) bool {
	return false
}

// clientHelloMatcher describes the passthrough module's clienthello
// matcher: the SNI names, and the other conditions.
func clientHelloMatcher(m map[string]any) (sni, other []string) {
	sni = strs(m["sni"])
	if alpn := strs(m["alpn"]); len(alpn) > 0 {
		other = append(other, "alpn "+strings.Join(alpn, " "))
	}
	if v := str(m["max_version"]); v != "" {
		other = append(other, "TLS version at most "+v)
	}
	if b, ok := m["served_by_caddy"].(bool); ok {
		if b {
			other = append(other, "names Caddy serves")
		} else {
			other = append(other, "names Caddy does not serve")
		}
	}
	return sni, other
}

// catchAllSet reports whether a layer-4 matcher set matches every TLS
// connection: empty, or only a tls or clienthello matcher with no
// condition.
func catchAllSet(set map[string]any) bool {
	for name, v := range set {
		m := obj(v)
		switch {
		case name == "tls" && len(m) == 0:
		case name == "clienthello" && len(m) == 0:
		default:
			return false
		}
	}
	return true
}
