package explain

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"encoding/json"
	"fmt"
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

// layer4 explains the layer-4 routes of a listener (a passthrough or
// layer4 server's, or, beside, those in front of an HTTP server). It
// returns false when no route takes the client.
func (e *engine) layer4(routes layer4.RouteList, beside bool) bool {
	i, err := e.matchLayer4(routes)
	if err != nil {
		e.undetermined(verify.Step{Stage: "passthrough", Name: "layer4", Detail: "matching the ClientHello: " + err.Error()},
			"the layer-4 routes could not be evaluated: "+err.Error())
		return true
	}
	if i < 0 {
		if beside {
			e.info("passthrough", "layer4", fmt.Sprintf("none of the %d passthrough route(s) in front of this server takes %s: the connection goes on to Caddy's TLS", len(routes), e.req.ServerName))
		}
		return false
	}
	r := routes[i]
	match := "no matcher: every connection"
	if len(r.MatcherSetsRaw) > 0 {
		b, _ := json.Marshal(r.MatcherSetsRaw) // compact
		match = string(b)
	}
	at := fmt.Sprintf("layer-4 route #%d (%s)", i, match)
	var cs *tls.ConnectionState // of the TLS connection a handler ended (by: which)
	var by string
	for _, raw := range r.HandlersRaw {
		kind := moduleName(raw, "handler")
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
			alert := cmp.Or(h.Alert, "handshake_failure")
			e.add(verify.Step{Stage: "passthrough", Name: "refuse", Verdict: verify.VerdictRefused, Reason: verify.ReasonOther,
				Detail: fmt.Sprintf("layer-4 route #%d (%s, route %q) refuses the connection with the TLS alert %s, before any certificate is asked for", i, match, h.Route, alert)})
			if alert == "none" {
				e.refuseHandshake("", verify.ReasonOther, "refused at layer 4: the connection is closed without an alert")
			} else {
				e.refuseHandshake(strings.ReplaceAll(alert, "_", " "), verify.ReasonOther, "refused at layer 4 by a passthrough refuse route")
			}
			return true
		case cs != nil:
			e.undetermined(verify.Step{Stage: "handler", Name: kind,
				Detail: fmt.Sprintf("after %s, %s runs the %q handler on the decrypted stream, which explain does not evaluate (it explains passthrough there)", by, at, kind)},
				"TLS is terminated at layer 4 and the client admitted; then the route runs a layer-4 handler explain does not evaluate: "+kind)
			return true
		default:
			e.undetermined(verify.Step{Stage: "passthrough", Name: kind, Detail: fmt.Sprintf("%s runs the %q handler, which explain does not evaluate", at, kind)},
				"the route that takes the name runs a layer-4 handler explain does not evaluate: "+kind)
			return true
		}
	}
	e.undetermined(verify.Step{Stage: "passthrough", Name: "layer4", Detail: at + " takes the name but has no handler explain knows"},
		"a layer-4 route takes the name with handlers explain does not know")
	return true
}

// terminator names the layer-4 handler kind that terminates TLS: the
// suite's terminate_tls, or caddy-l4's tls ("" for any other kind).
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
// (kind its JSON name, raw its JSON) with its connection policies, as an
// HTTP server's (engine.handshake): both handlers decide with those alone.
// It returns the connection state of an admitted client, or done when the
// verdict is set. A copy provisioned here (terminatorPolicies) joins the
// suite's material in force (material.JoinOnly), never read again or
// fetched; only Caddy's own client_auth trust_pool is read again.
func (e *engine) terminate(at, kind string, raw json.RawMessage) (cs *tls.ConnectionState, done bool) {
	name := terminator(kind) // caddy-l4's tls handler
	if kind == "terminate_tls" {
		name = "the terminate_tls handler"
	}
	ctx, cancel := caddy.NewContext(e.ctx) // the copy's, cleaned up after the handshake
	defer cancel()
	policies, err := terminatorPolicies(material.JoinOnly(ctx), raw)
	if err != nil {
		e.undetermined(verify.Step{Stage: "tls", Name: kind, Detail: at + ": provisioning " + name + ": " + err.Error()},
			name+" could not be provisioned: "+err.Error())
		return nil, true
	}
	cs = e.handshake(policies, name+" of "+at)
	return cs, cs == nil
}

// terminatorPolicies returns the connection policies of the TLS-terminating
// layer-4 handler raw: the running one's, else those of a copy provisioned
// in ctx.
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
	detail := fmt.Sprintf("layer-4 route #%d (%s, route %q) passes the connection through to %s: TLS does not end here; the backend sees this certificate and decides",
		i, match, cmp.Or(h.Route, "passthrough"), ups)
	if h.TLS != nil {
		detail += "; the handler re-encrypts to the upstream"
	}
	e.add(verify.Step{Stage: "passthrough", Name: "passthrough", Verdict: verify.VerdictAdmitted, Detail: detail, Checks: proxyChecks(h, nil)})
	e.rep.Verdict = Verdict{Outcome: OutcomePassthrough,
		Summary: fmt.Sprintf("TLS does not end here: %s is passed through to %s, which sees the client's certificate and decides", e.req.ServerName, ups)}
}

// matchLayer4 returns the index of the first route that takes the client,
// or -1: caddy-l4's own matcher sets on a connection that replays the
// ClientHello crypto/tls writes for the request.
func (e *engine) matchLayer4(routes layer4.RouteList) (int, error) {
	if len(routes) == 0 {
		return -1, nil
	}
	ctx, cancel := caddy.NewContext(e.ctx)
	defer cancel()
	cx := layer4.WrapConnection(e.conn(listenAddr(e.req.Listen), e.clientHello()), nil, zap.NewNop())
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
	c := e.conn(listenAddr(e.req.Listen), nil)
	tc := tls.Client(c, &tls.Config{ServerName: e.req.ServerName, NextProtos: e.req.ALPN, InsecureSkipVerify: true}) //nolint:gosec // never completes: only its ClientHello is kept
	_ = tc.Handshake()                                                                                               // fails at its first read, after writing the ClientHello
	e.hello = c.written.Bytes()
	return e.hello
}

// conn is a connection of the client on local, as matchers see it (the
// addresses; replaying read): nothing goes on the network.
func (e *engine) conn(local net.Addr, read []byte) *helloConn {
	return &helloConn{r: bytes.NewReader(read), local: local, remote: &net.TCPAddr{IP: net.ParseIP(e.req.RemoteIP), Port: 50000}}
}

// helloConn replays r and keeps what is written.
type helloConn struct {
	r             *bytes.Reader
	written       bytes.Buffer
	local, remote net.Addr
}

func (c *helloConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *helloConn) Write(p []byte) (int, error)      { return c.written.Write(p) }
func (c *helloConn) Close() error                     { return nil }
func (c *helloConn) LocalAddr() net.Addr              { return c.local }
func (c *helloConn) RemoteAddr() net.Addr             { return c.remote }
func (c *helloConn) SetDeadline(time.Time) error      { return nil }
func (c *helloConn) SetReadDeadline(time.Time) error  { return nil }
func (c *helloConn) SetWriteDeadline(time.Time) error { return nil }
