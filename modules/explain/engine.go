package explain

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/mholt/caddy-l4/layer4"

	"github.com/trustline/trustline/modules/passthrough"
	"github.com/trustline/trustline/modules/verify"
)

// Explain answers, for the config provisioned in ctx, what the server
// does with the client req describes, with the very code that decides
// (nothing proxied, nothing fetched; see the README). config is the
// config's JSON (caddy-l4 keeps its provisioned routes private); source
// names the config in the answer. An error means nothing was evaluated.
func Explain(ctx caddy.Context, config []byte, req *Request, source string) (*Report, error) {
	e := &engine{ctx: ctx, req: req, rep: &Report{Generated: time.Now().UTC(), Source: source, Request: RequestSummary{
		ServerName: req.ServerName, Listen: req.Listen, Method: req.Method, Path: req.Path, ALPN: req.ALPN, Upstream: req.Upstream,
		Chain: verify.DescribeCerts(req.certs),
	}}}
	if err := e.readConfig(config); err != nil {
		return nil, err
	}
	if req.Upstream != "" {
		if err := e.dialUpstream(); err != nil {
			return nil, err
		}
		return e.rep, nil
	}
	l, err := e.listener()
	if err != nil {
		return nil, err
	}
	e.run(l)
	if e.rep.Verdict.Outcome == "" {
		return nil, errors.New("explain reached no verdict")
	}
	return e.rep, nil
}

// engine is one explanation under way.
type engine struct {
	ctx   caddy.Context
	req   *Request
	rep   *Report
	trace *verify.Trace // the verifiers' steps while the handshake runs

	http *caddyhttp.App
	// from the config's JSON: the layer-4 routes in front of each HTTP
	// server, the passthrough app's servers and caddy-l4's layer4 app's
	wrappers  map[string][]*layer4.ListenerWrapper
	l4, l4app map[string]*layer4.Server

	local net.Addr // the local address of the listener explained
	hello []byte   // the ClientHello of the request, once made
}

func (e *engine) add(s verify.Step) { e.rep.Steps = append(e.rep.Steps, s) }

// info adds a step that only informs.
func (e *engine) info(stage, name, detail string) {
	e.add(verify.Step{Stage: stage, Name: name, Verdict: verify.VerdictInfo, Detail: detail})
}

// undetermined adds s as a step explain cannot evaluate, and makes the
// verdict undetermined.
func (e *engine) undetermined(s verify.Step, summary string) {
	s.Verdict = verify.VerdictUnknown
	e.add(s)
	e.rep.Verdict = Verdict{Outcome: OutcomeUndetermined, Summary: summary}
}

// readConfig finds the provisioned http app and reads the layer-4 routes
// from the JSON.
func (e *engine) readConfig(config []byte) error {
	if app, err := e.ctx.AppIfConfigured("http"); err == nil {
		e.http, _ = app.(*caddyhttp.App)
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("the http app: %w", err)
	}
	var cfg struct {
		Apps struct {
			HTTP        appServers[*caddyhttp.Server] `json:"http"`
			Passthrough appServers[*layer4.Server]    `json:"passthrough"`
			Layer4      appServers[*layer4.Server]    `json:"layer4"`
		} `json:"apps"`
	}
	if len(config) > 0 {
		if err := json.Unmarshal(config, &cfg); err != nil {
			return fmt.Errorf("reading the config: %w", err)
		}
	}
	e.wrappers = map[string][]*layer4.ListenerWrapper{}
	for name, srv := range cfg.Apps.HTTP.Servers {
		for _, raw := range srv.ListenerWrappersRaw {
			if moduleName(raw, "wrapper") != "layer4" {
				continue
			}
			lw := new(layer4.ListenerWrapper)
			if err := json.Unmarshal(raw, lw); err != nil {
				return fmt.Errorf("server %s: layer4 listener wrapper: %w", name, err)
			}
			e.wrappers[name] = append(e.wrappers[name], lw)
		}
	}
	e.l4, e.l4app = cfg.Apps.Passthrough.Servers, cfg.Apps.Layer4.Servers
	return nil
}

// appServers is an app's servers in the config's JSON.
type appServers[T any] struct {
	Servers map[string]T `json:"servers"`
}

// moduleName is the name of a module in its JSON, under its inline key
// ("handler", "wrapper").
func moduleName(raw json.RawMessage, key string) string {
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	name, _ := m[key].(string)
	return name
}

// candidate is a listener: an HTTP server (with its layer-4 routes in
// front), a passthrough server or a caddy-l4 layer4 server.
type candidate struct {
	name, kind string
	listen     []string
	http       *caddyhttp.Server
	l4         *layer4.Server
}

func (c *candidate) String() string {
	return fmt.Sprintf("%s %s on %s", c.kind, c.name, strings.Join(c.listen, " "))
}

// listener picks the listener: the one on --listen, the only one, or the
// one that takes the server name.
func (e *engine) listener() (*candidate, error) {
	var all []*candidate
	if e.http != nil {
		for name, srv := range e.http.Servers {
			all = append(all, &candidate{name: name, kind: "HTTP server", listen: srv.Listen, http: srv})
		}
	}
	for kind, servers := range map[string]map[string]*layer4.Server{"passthrough server": e.l4, "layer4 server": e.l4app} {
		for name, srv := range servers {
			all = append(all, &candidate{name: name, kind: kind, listen: srv.Listen, l4: srv})
		}
	}
	slices.SortFunc(all, func(a, b *candidate) int { return strings.Compare(a.String(), b.String()) })
	if len(all) == 0 {
		return nil, errors.New("the config has no HTTP or passthrough server")
	}
	names := func(cs []*candidate) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.String())
		}
		return strings.Join(out, "; ")
	}
	if e.req.Listen != "" {
		on := slices.DeleteFunc(slices.Clone(all), func(c *candidate) bool {
			return !slices.ContainsFunc(c.listen, func(l string) bool {
				clash, err := passthrough.ListenersClash(l, e.req.Listen)
				return err == nil && clash
			})
		})
		switch len(on) {
		case 0:
			return nil, fmt.Errorf("no listener on %s; the config's listeners: %s", e.req.Listen, names(all))
		case 1:
			return on[0], nil
		}
		return nil, fmt.Errorf("several listeners take %s (%s): give the full address", e.req.Listen, names(on))
	}
	if len(all) == 1 {
		return all[0], nil
	}
	serving := slices.DeleteFunc(slices.Clone(all), func(c *candidate) bool { return !e.serves(c) })
	if len(serving) == 1 {
		return serving[0], nil
	}
	if len(serving) == 0 {
		serving = all
	}
	return nil, fmt.Errorf("several listeners may take %s (%s): give --listen", e.req.ServerName, names(serving))
}

// serves reports whether the listener takes the server name over TLS: a
// route of its layer-4 routes, or (an HTTP server with TLS) a top-level
// route whose host matcher takes it.
func (e *engine) serves(c *candidate) bool {
	if c.l4 != nil {
		return e.passes(c.l4.Routes)
	}
	if slices.ContainsFunc(e.wrappers[c.name], func(lw *layer4.ListenerWrapper) bool { return e.passes(lw.Routes) }) {
		return true
	}
	if len(c.http.TLSConnPolicies) == 0 {
		return false
	}
	r := caddyhttp.PrepareRequest(&http.Request{Host: e.req.ServerName, URL: &url.URL{Path: "/"}, Header: http.Header{}}, caddy.NewReplacer(), nil, c.http)
	return slices.ContainsFunc(c.http.Routes, func(route caddyhttp.Route) bool {
		_, match := hostMatch(route.MatcherSets, r)
		return match
	})
}

// hostMatch reports whether the matcher sets hold a host matcher, and
// whether one takes r.
func hostMatch(sets caddyhttp.MatcherSets, r *http.Request) (hasHost, match bool) {
	for _, set := range sets {
		for _, m := range set {
			if host, ok := m.(caddyhttp.MatchHost); ok {
				hasHost = true
				if takes, _ := host.MatchWithError(r); takes {
					return true, true
				}
			}
		}
	}
	return hasHost, false
}

// passes reports whether a layer-4 route takes the client: passes it
// through, or terminates its TLS (terminate_tls or caddy-l4's tls).
func (e *engine) passes(routes layer4.RouteList) bool {
	i, err := e.matchLayer4(routes)
	if err != nil || i < 0 {
		return false
	}
	return slices.ContainsFunc(routes[i].HandlersRaw, func(raw json.RawMessage) bool {
		h := moduleName(raw, "handler")
		return h == "passthrough" || terminator(h) != ""
	})
}

// run explains the client on listener l.
func (e *engine) run(l *candidate) {
	e.info("listener", l.name, l.String())
	listen := e.req.Listen
	if listen == "" && len(l.listen) > 0 {
		listen = l.listen[0]
	}
	e.local = listenAddr(listen)
	if l.l4 != nil {
		if !e.layer4(l.l4.Routes, false) {
			e.add(verify.Step{Stage: "passthrough", Name: "layer4", Verdict: verify.VerdictRefused, Detail: "no route of this " + l.kind + " takes the ClientHello: caddy-l4 closes the connection"})
			e.refuseHandshake("", verify.ReasonOther, "no passthrough route takes the name: the connection is closed")
		}
		return
	}
	for _, lw := range e.wrappers[l.name] {
		if e.layer4(lw.Routes, true) {
			return
		}
	}
	if len(l.http.TLSConnPolicies) == 0 {
		e.add(verify.Step{Stage: "tls", Name: "listener", Verdict: verify.VerdictRefused, Reason: verify.ReasonOther,
			Detail: "this listener speaks plain HTTP (its server has no TLS connection policy): a TLS client's handshake fails"})
		e.refuseHandshake("", verify.ReasonOther, "the listener does not speak TLS")
		return
	}
	if cs := e.handshake(l.http.TLSConnPolicies, "the server"); cs != nil {
		e.routes(l.http, cs)
	}
}

// refuseHandshake sets the verdict of a refused handshake (undetermined
// when a step could not be evaluated).
func (e *engine) refuseHandshake(alert, reason, summary string) {
	e.rep.Verdict = Verdict{Outcome: OutcomeRefusedHandshake, Reason: reason, Alert: alert, Summary: summary}
	if s := e.unknownStep(); s != nil {
		e.rep.Verdict = Verdict{Outcome: OutcomeUndetermined, Reason: s.Reason,
			Summary: "the handshake depends on what explain does not do: " + s.Detail}
	}
}

// unknownStep is the first step explain could not evaluate (nil: none).
func (e *engine) unknownStep() *verify.Step {
	if i := slices.IndexFunc(e.rep.Steps, func(s verify.Step) bool { return s.Verdict == verify.VerdictUnknown }); i >= 0 {
		return &e.rep.Steps[i]
	}
	return nil
}
