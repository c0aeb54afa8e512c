package passthrough

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/trustline/trustline/internal/misplaced"
)

// Block is one `passthrough` block of a Caddyfile, parsed. Syntax:
//
//	passthrough [<listen address>] {
//		<server names...> <upstreams...> [{
//			alpn <protocols...>
//			name <route name>
//			lb_policy random|round_robin|least_conn|first|ip_hash
//			lb_try_duration <duration>
//			lb_try_interval <duration>
//			max_connections <n>
//			health_interval <duration>
//			health_timeout <duration>
//			health_port <port>
//			fail_duration <duration>
//			max_fails <n>
//			proxy_protocol v1|v2|off
//			dial_timeout <duration>
//			idle_timeout <duration>
//			copy auto|splice|buffered
//			max_lifetime <duration>
//			grace_period <duration>
//		}]
//		default terminate|refuse|<upstreams...> [{ <route options> }]
//		refuse_tls12
//		matching_timeout <duration>
//		proxy_protocol v1|v2
//		dial_timeout <duration>
//		idle_timeout <duration>
//		copy auto|splice|buffered
//		max_lifetime <duration>
//		grace_period <duration>
//	}
//
// A route line lists server names (exact, or *.example.com), then
// upstreams (host:port, or unix/path): a token with a colon or a slash
// is an upstream. The listen address is given only in the global-option
// form, for a port with no HTTP server.
type Block struct {
	// Address is the listen address of the global-option form.
	Address string
	// Routes in the order written.
	Routes []*RouteSpec
	// Default is what happens to ClientHellos no route takes:
	// "terminate", "refuse" or "upstream" (then DefaultRoute is set).
	// Empty: terminate beside an HTTP server, refuse standalone.
	Default      string
	DefaultRoute *RouteSpec
	// RefuseTLS12 refuses ClientHellos offering nothing above TLS 1.2.
	RefuseTLS12 bool
	// MatchingTimeout bounds the wait for a ClientHello.
	MatchingTimeout caddy.Duration

	defaults routeOptions
}

// RouteSpec is one route line.
type RouteSpec struct {
	Names     []string
	Upstreams []string
	ALPN      []string
	Where     string // file:line, for error messages

	opts routeOptions
}

// routeOptions are the options a route may set, and the block may set
// for all routes, parsed into the handler they configure; set records
// which were given.
type routeOptions struct {
	h              *Handler
	maxConnections int
	set            map[string]bool
}

// blockLevelOptions are the options valid at block level too (defaults
// for every route), with how a route inherits each.
var blockLevelOptions = map[string]func(to, from *Handler){
	"proxy_protocol": func(to, from *Handler) { to.ProxyProtocol = from.ProxyProtocol },
	"dial_timeout":   func(to, from *Handler) { to.DialTimeout = from.DialTimeout },
	"idle_timeout":   func(to, from *Handler) { to.IdleTimeout = from.IdleTimeout },
	"max_lifetime":   func(to, from *Handler) { to.MaxLifetime = from.MaxLifetime },
	"grace_period":   func(to, from *Handler) { to.GracePeriod = from.GracePeriod },
	"copy":           func(to, from *Handler) { to.Copy = from.Copy },
}

func newRoute(d *caddyfile.Dispenser) *RouteSpec {
	return &RouteSpec{Where: fmt.Sprintf("%s:%d", d.File(), d.Line()), opts: newOptions()}
}

func newOptions() routeOptions {
	return routeOptions{h: new(Handler), set: map[string]bool{}}
}

// ParseBlock parses a passthrough block; d is at the `passthrough` token.
// withAddress says whether the block takes a listen address (global
// option) or none (site directive).
func ParseBlock(d *caddyfile.Dispenser, withAddress bool) (*Block, error) {
	d.Next() // passthrough
	b := &Block{defaults: newOptions()}
	if d.NextArg() {
		if !withAddress {
			return nil, d.Errf("passthrough: inside a site block, passthrough takes no address: it routes in front of this site's own listener (use the global option `passthrough <address>` for a port with no HTTP server)")
		}
		b.Address = d.Val()
		if d.NextArg() {
			return nil, d.Errf("passthrough: one listen address per block, got another: %q", d.Val())
		}
		na, err := caddy.ParseNetworkAddress(b.Address)
		if err != nil {
			return nil, d.Errf("passthrough: listen address %q: %v", b.Address, err)
		}
		if !na.IsUnixNetwork() && streamNetwork(na.Network) != "tcp" {
			return nil, d.Errf("passthrough: listen address %q: only TCP (or a unix socket) can carry TLS passthrough", b.Address)
		}
	} else if withAddress {
		return nil, d.Errf("passthrough: the global option needs a listen address, as in `passthrough :8443 {...}` (to route in front of an HTTP server, put the block in one of its site blocks instead)")
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		word := d.Val()
		if blockLevelOptions[word] != nil || word == "default" || word == "refuse_tls12" || word == "matching_timeout" {
			if seen[word] {
				return nil, d.Errf("passthrough: duplicate option '%s'", word)
			}
			seen[word] = true
		}
		var err error
		switch {
		case word == "default":
			err = b.parseDefault(d, withAddress)
		case word == "refuse_tls12":
			if d.NextArg() {
				return nil, d.Errf("passthrough: refuse_tls12 takes no argument")
			}
			b.RefuseTLS12 = true
		case word == "matching_timeout":
			b.MatchingTimeout, err = durationArg(d, word)
		case blockLevelOptions[word] != nil:
			err = b.defaults.parseOption(d, word)
			if err == nil && d.NextBlock(1) {
				err = d.Errf("passthrough: option '%s' takes no block", word)
			}
		default:
			var rs *RouteSpec
			rs, err = parseRouteLine(d)
			b.Routes = append(b.Routes, rs)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(b.Routes) == 0 && b.DefaultRoute == nil {
		return nil, d.Errf("passthrough: the block has no route: write a line of server names and upstreams, as in `db.example.com 10.0.0.5:5432`")
	}
	if err := b.check(); err != nil {
		return nil, d.Errf("%v", err)
	}
	return b, nil
}

func (b *Block) parseDefault(d *caddyfile.Dispenser, standalone bool) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("passthrough: default needs terminate, refuse or upstreams")
	}
	switch args[0] {
	case "terminate", "refuse":
		if len(args) > 1 {
			return d.Errf("passthrough: default %s takes nothing more, got %q", args[0], args[1])
		}
		if args[0] == "terminate" && standalone {
			return d.Errf("passthrough: default terminate needs an HTTP server on this port to terminate TLS; on a standalone port use refuse or upstreams (or move the block into a site block)")
		}
		b.Default = args[0]
		if d.NextBlock(1) {
			return d.Errf("passthrough: default %s takes no block", args[0])
		}
		return nil
	}
	rs := newRoute(d)
	for _, a := range args {
		if !isUpstreamToken(a) {
			return d.Errf("passthrough: default: %q is not an upstream (host:port) nor terminate or refuse", a)
		}
		if err := checkUpstream(a); err != nil {
			return d.Errf("passthrough: default: %v", err)
		}
		rs.Upstreams = append(rs.Upstreams, a)
	}
	if err := rs.parseOptions(d); err != nil {
		return err
	}
	if len(rs.ALPN) > 0 {
		return d.Errf("passthrough: default route cannot restrict alpn")
	}
	b.Default, b.DefaultRoute = "upstream", rs
	return nil
}

func parseRouteLine(d *caddyfile.Dispenser) (*RouteSpec, error) {
	rs := newRoute(d)
	for _, tok := range append([]string{d.Val()}, d.RemainingArgs()...) {
		if isUpstreamToken(tok) {
			if err := checkUpstream(tok); err != nil {
				return nil, d.Errf("passthrough: %v", err)
			}
			rs.Upstreams = append(rs.Upstreams, tok)
			continue
		}
		if len(rs.Upstreams) > 0 {
			return nil, d.Errf("passthrough: %q comes after the upstreams of the route; list the server names first, then the upstreams (host:port)", tok)
		}
		if _, err := normalizeName(tok); err != nil {
			if strings.Contains(tok, "*") || !strings.Contains(tok, ".") {
				return nil, d.Errf("passthrough: %v (or, if %q was meant as an option, it is not one)", err, tok)
			}
			return nil, d.Errf("passthrough: %v", err)
		}
		rs.Names = append(rs.Names, tok)
	}
	if len(rs.Names) == 0 {
		return nil, d.Errf("passthrough: route %s has no server name: start the line with the names to pass through", strings.Join(rs.Upstreams, " "))
	}
	if len(rs.Upstreams) == 0 {
		if is := misplaced.Is(rs.Names[0]); is != "" {
			return nil, d.Errf("passthrough: %s; a passthrough block holds routes: server names, then upstreams", is)
		}
		return nil, d.Errf("passthrough: route %s has no upstream: add the backend's host:port after the names, as in `%s 10.0.0.5:443`", strings.Join(rs.Names, " "), rs.Names[0])
	}
	if err := rs.parseOptions(d); err != nil {
		return nil, err
	}
	return rs, nil
}

func (rs *RouteSpec) parseOptions(d *caddyfile.Dispenser) error {
	for d.NextBlock(1) {
		opt := d.Val()
		if rs.opts.set[opt] || (opt == "alpn" && rs.ALPN != nil) {
			return d.Errf("passthrough: duplicate route option '%s'", opt)
		}
		if opt == "alpn" {
			rs.ALPN = d.RemainingArgs()
			if len(rs.ALPN) == 0 {
				return d.Errf("passthrough: alpn needs at least one protocol name")
			}
			for _, p := range rs.ALPN {
				if len(p) > 255 {
					return d.Errf("passthrough: alpn protocol %q is over 255 bytes", p)
				}
			}
			continue
		}
		if err := rs.opts.parseOption(d, opt); err != nil {
			return err
		}
		if d.NextBlock(2) {
			return d.Errf("passthrough: route option '%s' takes no block", opt)
		}
	}
	return nil
}

func (o *routeOptions) parseOption(d *caddyfile.Dispenser, opt string) error {
	h := o.h
	active := func() *ActiveHealthChecks { return ensure(&ensure(&h.HealthChecks).Active) }
	passive := func() *PassiveHealthChecks { return ensure(&ensure(&h.HealthChecks).Passive) }
	var err error
	switch opt {
	case "name":
		h.Route, err = stringArg(d, opt)
	case "lb_policy":
		lb := ensure(&h.LoadBalancing)
		lb.Policy, err = stringArg(d, opt)
		if err == nil && !validPolicy(lb.Policy) {
			err = d.Errf("passthrough: lb_policy %q: want random, round_robin, least_conn, first or ip_hash", lb.Policy)
		}
	case "lb_try_duration":
		ensure(&h.LoadBalancing).TryDuration, err = durationArg(d, opt)
	case "lb_try_interval":
		ensure(&h.LoadBalancing).TryInterval, err = durationArg(d, opt)
	case "max_connections":
		o.maxConnections, err = intArg(d, opt, 1, 1<<30)
	case "health_interval":
		active().Interval, err = durationArg(d, opt)
	case "health_timeout":
		active().Timeout, err = durationArg(d, opt)
	case "health_port":
		active().Port, err = intArg(d, opt, 1, 65535)
	case "fail_duration":
		passive().FailDuration, err = durationArg(d, opt)
	case "max_fails":
		passive().MaxFails, err = intArg(d, opt, 1, 1<<30)
	case "proxy_protocol":
		h.ProxyProtocol, err = stringArg(d, opt)
		if err == nil && h.ProxyProtocol != "v1" && h.ProxyProtocol != "v2" && h.ProxyProtocol != "off" {
			err = d.Errf("passthrough: proxy_protocol %q: want v1, v2 or off", h.ProxyProtocol)
		}
	case "dial_timeout":
		h.DialTimeout, err = durationArg(d, opt)
	case "idle_timeout":
		h.IdleTimeout, err = durationArg(d, opt)
	case "copy":
		h.Copy, err = stringArg(d, opt)
		if err == nil && h.Copy != "auto" && h.Copy != "splice" && h.Copy != "buffered" {
			err = d.Errf("passthrough: copy %q: want auto, splice or buffered", h.Copy)
		}
	case "max_lifetime":
		h.MaxLifetime, err = durationArg(d, opt)
	case "grace_period":
		h.GracePeriod, err = durationArg(d, opt)
	default:
		return d.Errf("passthrough: unknown route option '%s'%s", opt, misplaced.Hint(opt))
	}
	if err != nil {
		return err
	}
	o.set[opt] = true
	return nil
}

// ensure returns *p, allocated first when nil.
func ensure[T any](p **T) *T {
	if *p == nil {
		*p = new(T)
	}
	return *p
}

// handler completes the layer4.handlers.passthrough config of rs: the
// block's defaults filled in (b nil: none), the upstreams listed.
func (b *Block) handler(rs *RouteSpec) *Handler {
	h := rs.opts.h
	h.Route = rs.routeName()
	for opt, inherit := range blockLevelOptions {
		if b != nil && !rs.opts.set[opt] {
			inherit(h, b.defaults.h)
		}
	}
	if h.ProxyProtocol == "off" {
		h.ProxyProtocol = ""
	}
	if h.Copy == "auto" {
		h.Copy = ""
	}
	h.Upstreams = nil
	for _, up := range rs.Upstreams {
		h.Upstreams = append(h.Upstreams, &Upstream{Dial: up, MaxConnections: rs.opts.maxConnections})
	}
	return h
}

func stringArg(d *caddyfile.Dispenser, opt string) (string, error) {
	args := d.RemainingArgs()
	if len(args) != 1 {
		return "", d.Errf("passthrough: %s takes exactly one value, got %d", opt, len(args))
	}
	return args[0], nil
}

func durationArg(d *caddyfile.Dispenser, opt string) (caddy.Duration, error) {
	s, err := stringArg(d, opt)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("passthrough: %s %q: %v", opt, s, err)
	}
	if dur <= 0 {
		return 0, d.Errf("passthrough: %s %q must be positive", opt, s)
	}
	return caddy.Duration(dur), nil
}

func intArg(d *caddyfile.Dispenser, opt string, lo, hi int) (int, error) {
	s, err := stringArg(d, opt)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, d.Errf("passthrough: %s %q: want a whole number from %d to %d", opt, s, lo, hi)
	}
	return n, nil
}

// isUpstreamToken tells upstreams (host:port, [v6]:port, unix/path) from
// server names, which have neither colons nor slashes.
func isUpstreamToken(s string) bool {
	return strings.ContainsAny(s, ":/")
}

func checkUpstream(s string) error {
	na, err := caddy.ParseNetworkAddress(s)
	if err != nil {
		return fmt.Errorf("upstream %q: %v", s, err)
	}
	if na.IsUnixNetwork() {
		return nil
	}
	if na.PortRangeSize() != 1 || na.StartPort == 0 {
		return fmt.Errorf("upstream %q: give one port, as in host:443", s)
	}
	if na.Host == "" {
		return fmt.Errorf("upstream %q: give a host, as in 10.0.0.5:443", s)
	}
	return nil
}

// check finds duplicate and overlapping names across routes.
func (b *Block) check() error {
	byName := map[string][]*RouteSpec{}
	routeNames := map[string]string{}
	for _, rs := range b.Routes {
		if _, err := newNameSet(rs.Names); err != nil {
			return fmt.Errorf("passthrough: route at %s: %v", rs.Where, err)
		}
		for _, n := range rs.Names {
			norm, _ := normalizeName(n)
			for _, prev := range byName[norm] {
				switch {
				case len(prev.ALPN) == 0 && len(rs.ALPN) == 0:
					return fmt.Errorf("passthrough: duplicate server name %q: routed at %s and again at %s", n, prev.Where, rs.Where)
				case slices.ContainsFunc(prev.ALPN, func(p string) bool { return slices.Contains(rs.ALPN, p) }):
					return fmt.Errorf("passthrough: overlapping routes for %q: the ALPN protocols %q (at %s) and %q (at %s) share a protocol", n, prev.ALPN, prev.Where, rs.ALPN, rs.Where)
				}
			}
			byName[norm] = append(byName[norm], rs)
		}
		name := rs.routeName()
		if other, dup := routeNames[name]; dup {
			return fmt.Errorf("passthrough: two routes are named %q (at %s and %s): give one a distinct `name`", name, other, rs.Where)
		}
		routeNames[name] = rs.Where
	}
	return nil
}

// CheckSiteOverlap reports passed-through names that would hide one of
// the site addresses of the block the directive sits in: Caddy would
// never see the ClientHello for them. Routes restricted by ALPN may share
// a site's name (ALPN multiplexing).
func (b *Block) CheckSiteOverlap(siteHosts []string) error {
	for _, rs := range b.Routes {
		if len(rs.ALPN) > 0 {
			continue
		}
		for _, n := range rs.Names {
			norm, _ := normalizeName(n)
			for _, host := range siteHosts {
				if host = strings.ToLower(host); overlaps(norm, host) {
					return fmt.Errorf("passthrough: server name %q (at %s) overlaps the site address %q of this site block: its connections would be passed through and the site never reached (restrict the route with `alpn`, or remove the name)", n, rs.Where, host)
				}
			}
		}
	}
	return nil
}

func (rs *RouteSpec) routeName() string {
	if rs.opts.h.Route != "" {
		return rs.opts.h.Route
	}
	if len(rs.Names) == 0 {
		return "default"
	}
	name := strings.ToLower(rs.Names[0])
	if len(rs.ALPN) > 0 {
		name += "/" + strings.Join(rs.ALPN, ",")
	}
	return name
}
