package explain

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4tls"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/passthrough"
	"github.com/trustline/trustline/modules/verify"
)

// layer4 explains the layer-4 routes of a listener (a passthrough
// server's, or those of the listener wrapper in front of an HTTP server:
// beside). It returns false when no route takes the client (beside: the
// connection goes on to Caddy's TLS).
func (e *engine) layer4(routes layer4.RouteList, beside bool) bool {
	i, err := e.matchLayer4(routes)
	if err != nil {
		e.add(verify.Step{Stage: "passthrough", Name: "layer4", Verdict: verify.VerdictUnknown, Detail: "matching the ClientHello: " + err.Error()})
		e.rep.Verdict = Verdict{Outcome: OutcomeUndetermined, Summary: "the layer-4 routes could not be evaluated: " + err.Error()}
		return true
	}
	if i < 0 {
		if beside {
			e.add(verify.Step{Stage: "passthrough", Name: "layer4", Verdict: verify.VerdictInfo,
				Detail: fmt.Sprintf("none of the %d passthrough route(s) in front of this server takes %s: the connection goes on to Caddy's TLS", len(routes), e.req.ServerName)})
		}
		return false
	}
	r := routes[i]
	match := compactJSON(r.MatcherSetsRaw)
	if len(r.MatcherSetsRaw) == 0 {
		match = "no matcher: every connection"
	}
	at := fmt.Sprintf("layer-4 route #%d (%s)", i, match)
	// the state of the TLS connection a handler ended (by: which), once
	// it ran
	var cs *tls.ConnectionState
	var by string
	for _, raw := range r.HandlersRaw {
		kind := handlerKind(raw)
		switch {
		case terminator(kind) != "" && cs == nil:
			done := false
			by = terminator(kind)
			if cs, done = e.terminate(at, kind, raw); done {
				return true
			}
		case kind == "passthrough":
			var h passthrough.Handler
			if err := json.Unmarshal(raw, &h); err != nil {
				break
			}
			if cs != nil {
				e.forwarded(at, by, &h, cs)
			} else {
				e.passedThrough(i, match, &h)
			}
			return true
		case kind == "refuse" && cs == nil:
			var h passthrough.Refuse
			_ = json.Unmarshal(raw, &h)
			alert := h.Alert
			if alert == "" {
				alert = "handshake_failure"
			}
			e.add(verify.Step{Stage: "passthrough", Name: "refuse", Verdict: verify.VerdictRefused, Reason: verify.ReasonOther,
				Detail: fmt.Sprintf("layer-4 route #%d (%s, route %q) refuses the connection with the TLS alert %s, before any certificate is asked for", i, match, h.Route, alert)})
			if alert == "none" {
				e.refuseHandshake("", verify.ReasonOther, "refused at layer 4: the connection is closed without an alert")
			} else {
				e.refuseHandshake(strings.ReplaceAll(alert, "_", " "), verify.ReasonOther, "refused at layer 4 by a passthrough refuse route")
			}
			return true
		case cs != nil:
			e.add(verify.Step{Stage: "handler", Name: kind, Verdict: verify.VerdictUnknown,
				Detail: fmt.Sprintf("after %s, %s runs the %q handler on the decrypted stream, which explain does not evaluate (it explains passthrough there)", by, at, kind)})
			e.rep.Verdict = Verdict{Outcome: OutcomeUndetermined,
				Summary: "TLS is terminated at layer 4 and the client admitted; then the route runs a layer-4 handler explain does not evaluate: " + kind}
			return true
		default:
			e.add(verify.Step{Stage: "passthrough", Name: kind, Verdict: verify.VerdictUnknown,
				Detail: fmt.Sprintf("%s runs the %q handler, which explain does not evaluate", at, kind)})
			e.rep.Verdict = Verdict{Outcome: OutcomeUndetermined, Summary: "the route that takes the name runs a layer-4 handler explain does not evaluate: " + kind}
			return true
		}
	}
	e.add(verify.Step{Stage: "passthrough", Name: "layer4", Verdict: verify.VerdictUnknown, Detail: fmt.Sprintf("%s takes the name but has no handler explain knows", at)})
	e.rep.Verdict = Verdict{Outcome: OutcomeUndetermined, Summary: "a layer-4 route takes the name with handlers explain does not know"}
	return true
}

// handlerKind is the name of a layer-4 handler in its JSON.
func handlerKind(raw json.RawMessage) string {
	var kind struct {
		Handler string `json:"handler"`
	}
	_ = json.Unmarshal(raw, &kind)
	return kind.Handler
}

// terminator names the layer-4 handler kind that terminates TLS: the
// suite's terminate_tls, or caddy-l4's own tls handler ("" for any other
// kind).
func terminator(kind string) string {
	switch kind {
	case "terminate_tls":
		return "terminate_tls"
	case "tls":
		return "caddy-l4's tls handler"
	}
	return ""
}

// terminate runs the handshake of the route's TLS-terminating handler
// (terminate_tls or caddy-l4's tls, kind its JSON name), raw its JSON:
// the handler is provisioned from it in a context of its own (cancelled,
// so cleaned up, when the handshake is over), and its connection
// policies run the handshake as an HTTP server's do (engine.handshake).
// It returns the connection state of an admitted client, or done when
// the verdict is set (refused, or the handler could not be provisioned).
//
// Both handlers decide with their connection policies alone:
// terminate_tls builds their tls.Config once and caddy-l4's tls for each
// connection, both with ConnectionPolicies.TLSConfig and its
// GetConfigForClient, and both record the connection state where the
// handlers after them read it (l4tls.GetConnectionStates). What differs
// (terminate_tls's handshake deadline, its session tickets, its closing
// of connections a trust change no longer admits, the level of the
// failure's log line) changes no verdict on a client's first handshake.
//
// A terminate_tls handler the config in this process provisioned is
// asked as it is (passthrough.InForce). Provisioning a copy (caddy-l4's
// tls, whose instances caddy-l4 keeps to itself) is no second truth for
// the suite's material: the context is
// material.JoinOnly, so a live_trust pool, a CRL or a keystore the
// running config holds is joined as it is in force (the usage pool's
// shared Reloadable, the version its handshakes read now), never read
// again or fetched; offline, the config provisioned in this process
// holds them the same way. Only Caddy's own client_auth trust_pool of a
// copy is read from its files again, as at any config load.
func (e *engine) terminate(at, kind string, raw json.RawMessage) (cs *tls.ConnectionState, done bool) {
	ctx, cancel := caddy.NewContext(e.ctx)
	defer cancel()
	name := terminator(kind) // caddy-l4's tls handler
	if kind == "terminate_tls" {
		name = "the terminate_tls handler"
	}
	policies, err := terminatorPolicies(material.JoinOnly(ctx), raw)
	if err != nil {
		e.add(verify.Step{Stage: "tls", Name: kind, Verdict: verify.VerdictUnknown, Detail: at + ": provisioning " + name + ": " + err.Error()})
		e.rep.Verdict = Verdict{Outcome: OutcomeUndetermined, Summary: name + " could not be provisioned: " + err.Error()}
		return nil, true
	}
	cs = e.handshake(policies, name+" of "+at)
	return cs, cs == nil
}

// terminatorPolicies returns the provisioned connection policies of the
// TLS-terminating layer-4 handler raw: a terminate_tls handler's as the
// config in this process provisioned them (passthrough.InForce), else
// those of a copy provisioned from raw in ctx.
func terminatorPolicies(ctx caddy.Context, raw json.RawMessage) (caddytls.ConnectionPolicies, error) {
	if t := passthrough.InForce(raw); t != nil {
		return t.ConnectionPolicies, nil
	}
	holder := struct {
		Handler json.RawMessage `caddy:"namespace=layer4.handlers inline_key=handler"`
	}{raw}
	mod, err := ctx.LoadModule(&holder, "Handler")
	if err != nil {
		return nil, err
	}
	switch h := mod.(type) {
	case *passthrough.TerminateTLS:
		return h.ConnectionPolicies, nil
	case *l4tls.Handler:
		return h.ConnectionPolicies, nil
	}
	return nil, fmt.Errorf("module %T does not terminate TLS", mod)
}

// passedThrough reports a passthrough route: TLS does not end here.
func (e *engine) passedThrough(i int, match string, h *passthrough.Handler) {
	ups := upstreamAddrs(h)
	route := h.Route
	if route == "" {
		route = "passthrough"
	}
	detail := fmt.Sprintf("layer-4 route #%d (%s, route %q) passes the connection through to %s: TLS does not end here; the backend sees this certificate and decides",
		i, match, route, strings.Join(ups, ", "))
	checks := proxyChecks(h, nil)
	if h.TLS != nil {
		detail += "; the handler re-encrypts to the upstream"
	}
	e.add(verify.Step{Stage: "passthrough", Name: "passthrough", Verdict: verify.VerdictAdmitted, Detail: detail, Checks: checks})
	e.rep.Verdict = Verdict{Outcome: OutcomePassthrough,
		Summary: fmt.Sprintf("TLS does not end here: %s is passed through to %s, which sees the client's certificate and decides", e.req.ServerName, strings.Join(ups, ", "))}
}

// matchLayer4 returns the index of the first route that takes the
// client, or -1: caddy-l4's own matcher sets (each route's matchers
// provisioned from its JSON in a context of its own, cleaned up after),
// on a connection that replays the ClientHello crypto/tls writes for
// the request's server name and ALPN; the suite's clienthello matcher
// reads it as it reads a client's.
func (e *engine) matchLayer4(routes layer4.RouteList) (int, error) {
	if len(routes) == 0 {
		return -1, nil
	}
	ctx, cancel := caddy.NewContext(e.ctx)
	defer cancel()
	cx := layer4.WrapConnection(&helloConn{r: bytes.NewReader(e.clientHello()), local: listenAddr(e.req.Listen),
		remote: &net.TCPAddr{IP: net.ParseIP(e.req.RemoteIP), Port: 50000}}, nil, zap.NewNop())
	for i, route := range routes {
		r := *route // LoadModule clears the raw field: keep the config's
		mods, err := ctx.LoadModule(&r, "MatcherSetsRaw")
		if err != nil {
			return -1, fmt.Errorf("route %d: loading its matchers: %w", i, err)
		}
		var sets layer4.MatcherSets
		if err := sets.FromInterface(mods); err != nil {
			return -1, fmt.Errorf("route %d: %w", i, err)
		}
		ok, err := sets.AnyMatch(cx)
		if err != nil {
			return -1, fmt.Errorf("route %d: %w", i, err)
		}
		if ok {
			return i, nil
		}
	}
	return -1, nil
}

// clientHello is the ClientHello a crypto/tls client writes for the
// request: its server name and ALPN offer (made once).
func (e *engine) clientHello() []byte {
	if e.hello != nil {
		return e.hello
	}
	c := &helloConn{r: bytes.NewReader(nil)}
	tc := tls.Client(c, &tls.Config{ServerName: e.req.ServerName, NextProtos: e.req.ALPN, InsecureSkipVerify: true}) //nolint:gosec // never completes: only its ClientHello is kept
	_ = tc.Handshake()                                                                                               // fails at its first read, after writing the ClientHello
	e.hello = c.written.Bytes()
	return e.hello
}

// helloConn replays r and keeps what is written.
type helloConn struct {
	r             *bytes.Reader
	written       bytes.Buffer
	local, remote net.Addr
}

func (c *helloConn) Read(p []byte) (int, error) {
	if c.r.Len() == 0 {
		return 0, io.EOF
	}
	return c.r.Read(p)
}
func (c *helloConn) Write(p []byte) (int, error)      { return c.written.Write(p) }
func (c *helloConn) Close() error                     { return nil }
func (c *helloConn) LocalAddr() net.Addr              { return orAddr(c.local) }
func (c *helloConn) RemoteAddr() net.Addr             { return orAddr(c.remote) }
func (c *helloConn) SetDeadline(time.Time) error      { return nil }
func (c *helloConn) SetReadDeadline(time.Time) error  { return nil }
func (c *helloConn) SetWriteDeadline(time.Time) error { return nil }

func orAddr(a net.Addr) net.Addr {
	if a == nil {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	}
	return a
}

// compactJSON is v as compact JSON, for a step's detail.
func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
