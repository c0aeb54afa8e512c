package explain

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/trustline/trustline/modules/peer"
	"github.com/trustline/trustline/modules/verify"
)

// routes walks the server's routes with the request a completed handshake
// gives, through Caddy's own route machinery (groups, terminal routes and
// matcher errors behave as they do), on copies whose handlers are
// explainHandlers.
func (e *engine) routes(srv *caddyhttp.Server, cs *tls.ConnectionState) {
	proto, major := "HTTP/1.1", 1
	if cs.NegotiatedProtocol == "h2" {
		proto, major = "HTTP/2.0", 2
	}
	u := &url.URL{Path: e.req.Path}
	if p, err := url.ParseRequestURI(e.req.Path); err == nil {
		u = p
	}
	r := &http.Request{
		Method: e.req.Method, URL: u, RequestURI: e.req.Path, Proto: proto, ProtoMajor: major,
		Host: e.req.ServerName, Header: http.Header{}, RemoteAddr: e.req.RemoteIP + ":50000", TLS: cs, Body: http.NoBody,
	}
	w := httptest.NewRecorder()
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, srv)
	final := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		if e.rep.Verdict.Outcome == "" {
			e.info("route", "server", "no route answered the request: Caddy answers 200 with an empty body")
			e.rep.Verdict = Verdict{Outcome: OutcomeRoutedElsewhere, Status: http.StatusOK,
				Summary: "admitted at the handshake, but no route of the site answers the request (an empty 200)"}
		}
		return nil
	})
	err := e.explainRoutes(srv.Routes, "").Compile(final).ServeHTTP(w, r)
	if err != nil {
		status := http.StatusInternalServerError
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			status = he.StatusCode
		}
		if e.rep.Verdict.Outcome == "" || e.rep.Verdict.Status == 0 {
			summary := fmt.Sprintf("the request is answered with %d: %v", status, err)
			if srv.Errors != nil {
				summary += " (the server's handle_errors routes shape the answer)"
			}
			e.rep.Verdict = Verdict{Outcome: OutcomeRefusedHTTP, Status: status, Summary: summary}
		}
		if status < 400 {
			e.rep.Verdict.Outcome = OutcomeAdmitted
		}
	}
	if s := e.unknownStep(); s != nil && (e.rep.Verdict.Outcome == OutcomeAdmitted || e.rep.Verdict.Outcome == OutcomeRefusedHTTP) {
		e.rep.Verdict.Outcome = OutcomeUndetermined
		e.rep.Verdict.Summary = "the answer depends on what explain does not run: " + s.Detail
	}
}

// explainRoutes copies routes with reporting matchers and explainHandlers,
// numbered after at ("2", "2.1" inside a subroute).
func (e *engine) explainRoutes(routes caddyhttp.RouteList, at string) caddyhttp.RouteList {
	out := make(caddyhttp.RouteList, 0, len(routes))
	for i, rt := range routes {
		where := fmt.Sprint(i)
		if at != "" {
			where = at + "." + where
		}
		c := caddyhttp.Route{Group: rt.Group, Terminal: rt.Terminal,
			MatcherSets: caddyhttp.MatcherSets{{&routeMatcher{e: e, sets: rt.MatcherSets, where: where}}}}
		for _, h := range rt.Handlers {
			c.Handlers = append(c.Handlers, &explainHandler{e: e, h: h, where: where})
		}
		// builds the middleware chain from Handlers (HandlersRaw is empty)
		_ = c.ProvisionHandlers(e.ctx, nil)
		out = append(out, c)
	}
	return out
}

// routeMatcher stands for a route's matcher sets: it runs them as Caddy
// does and tells the outcome of a route that is about this request's site
// (no host matcher, or one that takes the request).
type routeMatcher struct {
	e     *engine
	sets  caddyhttp.MatcherSets
	where string
}

func (m *routeMatcher) MatchWithError(r *http.Request) (bool, error) {
	ok, err := m.sets.AnyMatchWithError(r)
	if hasHost, ours := hostMatch(m.sets, r); ok || err != nil || ours || !hasHost {
		m.e.add(m.step(r, ok, err))
	}
	return ok, err
}

// step describes the route's matchers and which of them took the
// request; the peer matcher tells its patterns one by one.
func (m *routeMatcher) step(r *http.Request, ok bool, err error) verify.Step {
	s := verify.Step{Stage: "route", Name: "route " + m.where, Verdict: verify.VerdictInfo}
	var sets []string
	for _, set := range m.sets {
		var parts []string
		for _, mt := range set {
			match, _ := matchOne(mt, r)
			parts = append(parts, fmt.Sprintf("%s=%v", describeMatcher(mt), match))
			if p, isPeer := mt.(*peer.MatchPeer); isPeer {
				s.Checks = append(s.Checks, p.Patterns.Checks(peer.FromState(r.TLS))...)
			}
		}
		sets = append(sets, "{"+strings.Join(parts, " ")+"}")
	}
	switch {
	case err != nil:
		s.Detail = fmt.Sprintf("a matcher failed: %v", err)
	case len(m.sets) == 0:
		s.Detail = "matches every request (no matcher)"
	case ok:
		s.Detail = "matches: " + strings.Join(sets, " or ")
	default:
		s.Detail = "does not match: " + strings.Join(sets, " or ")
	}
	return s
}

func matchOne(m any, r *http.Request) (bool, error) {
	switch mt := m.(type) {
	case caddyhttp.RequestMatcherWithError:
		return mt.MatchWithError(r)
	case caddyhttp.RequestMatcher: //nolint:staticcheck // older matchers
		return mt.Match(r), nil
	}
	return false, nil
}

// describeMatcher names a matcher and, for the common ones, its values.
func describeMatcher(m any) string {
	switch mt := m.(type) {
	case caddyhttp.MatchHost:
		return "host" + fmt.Sprint([]string(mt))
	case caddyhttp.MatchPath:
		return "path" + fmt.Sprint([]string(mt))
	case caddyhttp.MatchMethod:
		return "method" + fmt.Sprint([]string(mt))
	case *peer.MatchPeer:
		return "peer"
	case *caddyhttp.MatchNot:
		return "not"
	}
	return handlerName(m)
}
