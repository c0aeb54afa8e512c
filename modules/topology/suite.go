package topology

import (
	"cmp"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/modules/passthrough"
	"github.com/trustline/trustline/modules/peer"
)

// suitePackage is the import path prefix of the suite's modules.
const suitePackage = "github.com/trustline/trustline/"

// undecoded stands for a suite module whose config does not decode.
type undecoded struct{ err error }

// suiteModule decodes the config v of module id (key: its inline key, ""
// for a matcher) into the module's own type, strictly as Caddy does, or
// returns undecoded. Read through their types, a renamed field of the
// suite's modules fails to compile or fails suitemodules_test.go. It
// returns nil for a module the suite does not own, walked as generic JSON.
func suiteModule(id, key string, v any) any {
	info, err := caddy.GetModule(id)
	if err != nil {
		return nil
	}
	mod := info.New()
	t := reflect.TypeOf(mod)
	if t == nil || t.Kind() != reflect.Pointer || !strings.HasPrefix(t.Elem().PkgPath(), suitePackage) {
		return nil
	}
	if m, ok := v.(map[string]any); ok && key != "" {
		m = maps.Clone(m)
		delete(m, key)
		v = m
	}
	raw, err := json.Marshal(v)
	if err == nil {
		err = caddy.StrictUnmarshalJSON(raw, mod)
	}
	if err != nil {
		return undecoded{err}
	}
	return mod
}

// why is the not-analysed reason for a module suiteModule returned s for
// and the caller does not read: its decoding error, or reason.
func why(s any, reason string) string {
	if u, ok := s.(undecoded); ok {
		return "config does not decode: " + u.err.Error()
	}
	return reason
}

// generic is v (a suite module's field that holds Caddy's config or
// another module's) as the generic JSON the rest of the analysis walks.
func generic(v any) any {
	raw, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(raw, &out)
	return out
}

// suiteHandler reads the suite's HTTP handlers (modules/peer, this
// package's); it returns false for a handler the suite does not own.
func (a *analyzer) suiteHandler(sc *serverCtx, route *Route, name string, h map[string]any, path string) bool {
	id := "http.handlers." + name
	switch s := suiteModule(id, "handler", h).(type) {
	case nil:
		return false
	case *peer.Publish, *Handler:
		// publishes the verified identity as placeholders; serves this
		// report: no leg
	case *peer.Authorize:
		route.Inbound.PeerPatterns = append(route.Inbound.PeerPatterns, "peer_authorize: "+strings.Join(s.Describe(), "; ")+shadow(s.Shadow))
	case *peer.ForwardHeaders:
		sc.strip.peerHeaders(s)
	default:
		a.notAnalysed(path, id, why(s, "handler not analysed"))
	}
	return true
}

// shadow is what a peer module in shadow mode adds to its description.
func shadow(on bool) string {
	if on {
		return " (shadow: logs, refuses nothing)"
	}
	return ""
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
	s.deletes = append(s.deletes, lower(slices.Concat([]string{peer.HeaderClientCert, peer.HeaderClientCertChain, peer.HeaderXFCC}, sets, h.Strip))...)
	s.set = append(s.set, identityNames(sets)...)
	s.peerSet = append(s.peerSet, identityNames(sets)...)
	s.peerAll = append(s.peerAll, sets...)
}

// peerPatterns describes the identity patterns of a peer matcher (module
// id, config m at path).
func (a *analyzer) peerPatterns(id string, m any, path string) []string {
	switch s := suiteModule(id, "", m).(type) {
	case interface{ Describe() []string }: // peer.MatchPeer, peer.L4MatchPeer
		return s.Describe()
	default:
		a.notAnalysed(path, id, why(s, "matcher not analysed"))
		return nil
	}
}

// suiteL4Handler reads the passthrough module's layer-4 handlers; it
// returns false for a handler the suite does not own.
func (a *analyzer) suiteL4Handler(route *Route, st *l4State, name string, h map[string]any, path string, when []string) bool {
	id := "layer4.handlers." + name
	switch s := suiteModule(id, "handler", h).(type) {
	case nil:
		return false
	case *passthrough.TerminateTLS:
		a.terminate(route, st, arr(generic(s.ConnectionPolicies)), field(path, "connection_policies"))
	case *passthrough.Handler:
		a.passthrough(route, st, s, path, when)
	case *passthrough.Refuse:
		route.Inbound.Mode = ModeRefused
		route.Inbound.Refusal = cmp.Or(s.Alert, "(default alert)")
	default:
		a.notAnalysed(path, id, why(s, "layer-4 handler not analysed"))
	}
	return true
}

// passthrough reads a passthrough handler: TLS passed through to its
// upstreams, or re-encrypted to them ("mTLS in, mTLS out").
func (a *analyzer) passthrough(route *Route, st *l4State, h *passthrough.Handler, path string, when []string) {
	out := &Outbound{Path: path, Handler: "passthrough", When: when, Upstreams: []string{}, Mode: OutTCP}
	for _, u := range h.Upstreams {
		if u != nil && u.Dial != "" {
			out.Upstreams = append(out.Upstreams, u.Dial)
		}
	}
	if pp := h.ProxyProtocol; pp != "" && pp != "off" {
		out.ProxyProtocol = pp
		out.Notes = append(out.Notes, "sends PROXY protocol "+pp+" (the client's address reaches the backend)")
		if pp == "v2" && h.ProxyProtocolIdentity {
			out.IdentityTLVs = true
			out.Notes = append(out.Notes, "the verified client identity in PROXY v2 TLVs (PP2_TYPE_SSL with the CN and certificate, 0xE0 with the SPIFFE ID)")
		}
	}
	if t := h.TLS; t != nil {
		tp := field(path, "tls")
		a.upstreamTLS(out, obj(generic(t.TLSConfig)), tp)
		a.suiteIdentity(out, obj(generic(t.ClientIdentityRaw)), t.UpstreamIdentity, field(tp, "client_identity"))
	}
	route.Outbound = append(route.Outbound, out)
	if st.terminated && out.Mode == OutTCP {
		a.finding(SeverityWarning, KindPlaintextLeg, path,
			"TLS ends at Caddy (layer-4 tls handler) and the bytes go on unencrypted to "+strings.Join(out.Upstreams, ", "),
			"drop the tls handler to pass TLS through end to end, or re-encrypt with a proxy upstream `tls` block")
		return
	}
	if route.Inbound.Mode == ModeTCP {
		route.Inbound.Mode = ModePassthrough
	}
	route.Inbound.PassthroughTo = append(route.Inbound.PassthroughTo, out.Upstreams...)
}

// clientHelloMatcher describes the passthrough module's clienthello
// matcher: the SNI names, and the other conditions.
func clientHelloMatcher(m any) (sni, other []string, err error) {
	mod := suiteModule("layer4.matchers.clienthello", "", m)
	s, ok := mod.(*passthrough.MatchClientHello)
	if !ok {
		return nil, nil, errors.New(why(mod, "matcher not analysed"))
	}
	if len(s.ALPN) > 0 {
		other = append(other, "alpn "+strings.Join(s.ALPN, " "))
	}
	if s.MaxVersion != "" {
		other = append(other, "TLS version at most "+s.MaxVersion)
	}
	switch {
	case s.ServedByCaddy == nil:
	case *s.ServedByCaddy:
		other = append(other, "names Caddy serves")
	default:
		other = append(other, "names Caddy does not serve")
	}
	return s.SNI, other, nil
}

// catchAllSet reports whether a layer-4 matcher set matches every TLS
// connection: empty, or only a tls or clienthello matcher with no
// condition.
func catchAllSet(set map[string]any) bool {
	for name, v := range set {
		switch name {
		case "tls":
			if len(obj(v)) > 0 {
				return false
			}
		case "clienthello":
			if sni, other, err := clientHelloMatcher(v); err != nil || len(sni)+len(other) > 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}
