package explain

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/peer"
	"github.com/trustline/trustline/modules/tlsclient"
	"github.com/trustline/trustline/modules/upstream"
	"github.com/trustline/trustline/modules/verify"
)

// explainHandler stands for one handler of a route during explain:
// peer_authorize is asked for its decision; the handlers that only rewrite
// the request run for real; those that answer are told, never run.
type explainHandler struct {
	e     *engine
	h     caddyhttp.MiddlewareHandler
	where string
}

// Handlers that only change the request (or wrap the response writer)
// and call the next one: run as they are.
var runReal = []string{"headers", "rewrite", "vars", "map", "log_append", "peer_identity"}

// Handlers that call the next one and decide nothing explain needs (they
// encode, time or trace the response, or read the body): passed over.
var passOver = []string{"encode", "templates", "push", "intercept", "tracing", "request_body", "timeouts", "copy_response_headers"}

// Handlers that answer the request and never call the next one.
var answers = []string{"file_server", "copy_response", "trustline_topology"}

func (x *explainHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	e := x.e
	name := handlerName(x.h)
	switch h := x.h.(type) {
	case *peer.Authorize:
		return x.authorize(h, w, r, next)
	case *peer.ForwardHeaders:
		return x.forward(h, w, r, next)
	case *caddyhttp.Subroute:
		routes := e.explainRoutes(h.Routes, x.where)
		err := routes.Compile(next).ServeHTTP(w, r)
		if err != nil && h.Errors != nil {
			e.info("route", "subroute "+x.where, "the subroute's own error routes shape the error answer: "+err.Error())
		}
		return err
	case *reverseproxy.Handler:
		x.proxy(h, r)
		return nil
	case *caddyhttp.StaticResponse:
		status := statusOf(r, h.StatusCode, http.StatusOK)
		detail := fmt.Sprintf("static_response answers %d", status)
		if h.Abort {
			detail = "static_response aborts: the connection is closed without an answer"
		}
		e.info("handler", "static_response", detail+" (route "+x.where+")")
		e.answer(status, detail)
		return nil
	case *caddyhttp.StaticError:
		status := statusOf(r, h.StatusCode, http.StatusInternalServerError)
		e.add(verify.Step{Stage: "handler", Name: "error", Verdict: verify.VerdictRefused, Reason: verify.ReasonNotAllowed,
			Detail: fmt.Sprintf("the error handler answers %d (route %s): %s", status, x.where, h.Error)})
		return caddyhttp.Error(status, fmt.Errorf("%s", h.Error))
	}
	switch {
	case slices.Contains(runReal, name):
		return x.h.ServeHTTP(w, r, next)
	case slices.Contains(passOver, name):
		return next.ServeHTTP(w, r)
	case slices.Contains(answers, name):
		e.info("handler", name, name+" answers the request (route "+x.where+"; explain does not run it)")
		e.answer(http.StatusOK, "answered by "+name)
		return nil
	case name == "authentication":
		e.info("handler", name, "authentication checks the request's credentials, which explain does not have: the walk goes on as if they were right (route "+x.where+")")
		return next.ServeHTTP(w, r)
	}
	e.undetermined(verify.Step{Stage: "handler", Name: name,
		Detail: "explain does not run the " + name + " handler (route " + x.where + "), and cannot tell whether it answers the request or passes it on"},
		"the request reaches the "+name+" handler, which explain does not run")
	return nil
}

// statusOf is a handler's status code setting, placeholders replaced
// (def when unset), as the handler reads it.
func statusOf(r *http.Request, code caddyhttp.WeakString, def int) int {
	s := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).ReplaceAll(string(code), "")
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return n
	}
	return def
}

// answer sets the verdict of a request a handler answers.
func (e *engine) answer(status int, summary string) {
	outcome := OutcomeAdmitted
	if status >= 400 {
		outcome = OutcomeRefusedHTTP
	}
	e.rep.Verdict = Verdict{Outcome: outcome, Status: status, Summary: summary}
}

// authorize asks peer_authorize for its decision (the one its ServeHTTP
// acts on) and answers 403 as it would.
func (x *explainHandler) authorize(h *peer.Authorize, w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	d := h.Decide(r)
	s := verify.Step{Stage: "policy", Name: "peer_authorize", Checks: h.Patterns.Checks(d.Identity)}
	switch {
	case d.Allowed:
		s.Verdict, s.Detail = verify.VerdictAdmitted, "the identity matches the patterns (route "+x.where+")"
	case d.Identity == nil:
		s.Verdict, s.Reason, s.Detail = verify.VerdictRefused, d.Reason, "no verified client identity: every request is denied (403)"
	default:
		s.Verdict, s.Reason = verify.VerdictRefused, d.Reason
		s.Detail = fmt.Sprintf("%s %q matches none of %s: denied (403)", d.Failed, d.Identity.Value(d.Failed), h.Summary(d.Failed))
	}
	if !d.Allowed && d.Shadow {
		s.Verdict, s.Detail = verify.VerdictShadow, "shadow: would deny, lets the request through: "+s.Detail
	}
	x.e.add(s)
	if !d.Allowed && !d.Shadow {
		x.e.rep.Verdict = Verdict{Outcome: OutcomeRefusedHTTP, Status: http.StatusForbidden, Reason: s.Reason,
			Summary: "peer_authorize denies the request: " + s.Detail}
		return caddyhttp.Error(http.StatusForbidden, fmt.Errorf("peer_authorize: client identity not allowed"))
	}
	return next.ServeHTTP(w, r)
}

// forward runs forward_peer_identity on the request, with forged client
// copies of every header it strips, and tells what it removed and what it
// set: what the upstream sees.
func (x *explainHandler) forward(h *peer.ForwardHeaders, w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	const forged = "forged by the client"
	stripped := h.Stripped()
	for _, n := range stripped {
		r.Header.Set(n, forged)
	}
	before := r.Header.Clone()
	told := false
	tell := func(seen http.Header) {
		told = true
		var checks []verify.Check
		for _, n := range stripped {
			have := "removed"
			if seen.Get(n) == forged {
				have = "kept"
			}
			checks = append(checks, verify.Check{Name: "strip " + n, Want: "client copies removed", Have: have, OK: have == "removed"})
		}
		set := 0
		for _, n := range slices.Sorted(maps.Keys(seen)) {
			if v := seen.Get(n); v != "" && v != before.Get(n) {
				checks = append(checks, verify.Check{Name: "set " + n, Want: "to the upstream", Have: v, OK: true})
				set++
			}
		}
		detail := fmt.Sprintf("forward_peer_identity removes %d header name(s) whatever the client sends, then sets %d from the verified identity (route %s)", len(stripped), set, x.where)
		if peer.FromState(r.TLS) == nil {
			detail += "; no verified identity: it sets nothing"
		}
		x.e.add(verify.Step{Stage: "headers", Name: "forward_peer_identity", Verdict: verify.VerdictInfo, Detail: detail, Checks: checks})
	}
	err := h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w2 http.ResponseWriter, r2 *http.Request) error {
		tell(r2.Header)
		return next.ServeHTTP(w2, r2)
	}))
	if !told {
		tell(r.Header)
	}
	return err
}

// proxy tells where reverse_proxy sends the request and what the
// outbound leg presents and trusts (nothing is proxied).
func (x *explainHandler) proxy(h *reverseproxy.Handler, r *http.Request) {
	e := x.e
	var ups []string
	for _, u := range h.Upstreams {
		ups = append(ups, u.Dial)
	}
	if h.DynamicUpstreams != nil {
		ups = append(ups, "dynamic upstreams ("+handlerName(h.DynamicUpstreams)+")")
	}
	s := verify.Step{Stage: "upstream", Name: "reverse_proxy", Verdict: verify.VerdictInfo,
		Detail: fmt.Sprintf("reverse_proxy sends the request to %s (route %s): %s", strings.Join(ups, ", "), x.where, describeTransport(h.Transport))}
	if t, ok := h.Transport.(*upstream.Transport); ok && t.Live() != nil {
		s.Checks = setupChecks(t.Live().Describe())
	}
	if peer.FromState(r.TLS) != nil {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		for _, p := range []string{"spiffe_id", "subject", "serial", "trust_domain", "fingerprint"} {
			if v, ok := repl.GetString("peer." + p); ok && v != "" {
				s.Checks = append(s.Checks, verify.Check{Name: "{peer." + p + "}", Want: "placeholder", Have: v, OK: true})
			}
		}
	}
	e.add(s)
	e.answer(http.StatusOK, "admitted: reverse_proxy sends the request to "+strings.Join(ups, ", "))
}

func identityLine(s tlsclient.Setup) string {
	if s.Identity == nil {
		return "none: no client certificate is presented"
	}
	return fmt.Sprintf("%q serial %s, not after %s", s.Identity.Subject.String(), material.SerialString(s.Identity), material.TimeString(s.Identity.NotAfter))
}

// describeTransport says how reverse_proxy reaches the backend.
func describeTransport(t http.RoundTripper) string {
	switch tr := t.(type) {
	case *upstream.Transport:
		if tr.Live() == nil {
			return "transport mtls without TLS (plain HTTP)"
		}
		return describeTLS("transport mtls", tr.Live().Describe())
	case *reverseproxy.HTTPTransport:
		if tr.TLS == nil {
			return "transport http, plain HTTP: the backend gets the request unencrypted"
		}
		if tr.TLS.InsecureSkipVerify {
			return "transport http over TLS, the backend NOT verified (tls_insecure_skip_verify)"
		}
		return "transport http over TLS, the backend verified by Caddy's tls settings (trust read at config load)"
	case nil:
		return "no transport"
	}
	return "transport " + handlerName(t)
}

// describeTLS says how the suite's TLS client (the mtls transport's,
// the passthrough handler's tls) reaches the backend.
func describeTLS(what string, setup tlsclient.Setup) string {
	s := what + " (TLS"
	if setup.ServerName != "" {
		s += ", server name " + setup.ServerName
	}
	if setup.Insecure {
		s += ", the backend NOT verified: tls_insecure_skip_verify"
	}
	return s + ")"
}

// handlerName is a module's name (or its Go type).
func handlerName(v any) string {
	if mod, ok := v.(caddy.Module); ok {
		return mod.CaddyModule().ID.Name()
	}
	return fmt.Sprintf("%T", v)
}
