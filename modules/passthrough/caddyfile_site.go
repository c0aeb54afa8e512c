package passthrough

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/caddyinternals"
)

// The passthrough block (syntax on Block) is a site directive, which
// becomes a caddy-l4 `layer4` listener wrapper then the `tls` wrapper on
// exactly the site's HTTP server (mergeIntoServersOption), or a global
// option with an address, a caddy-l4 server in the `passthrough` app for
// a port with no HTTP server (README.md, "What it generates").
func init() {
	httpcaddyfile.RegisterGlobalOption("passthrough", parsePassthroughGlobal)
	httpcaddyfile.RegisterDirective("passthrough", parsePassthroughDirective)
}

const passthroughPortsKey = "trustline.passthrough.ports"

func parsePassthroughGlobal(d *caddyfile.Dispenser, existing any) (any, error) {
	app := &App{Servers: map[string]*layer4.Server{}}
	if existing != nil {
		prev, ok := existing.(httpcaddyfile.App)
		if !ok {
			return nil, d.Errf("passthrough: unexpected existing value %T", existing)
		}
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, d.Errf("passthrough: reading the previous passthrough blocks: %v", err)
		}
	}
	b, err := ParseBlock(d, true)
	if err != nil {
		return nil, err
	}
	routes, err := b.Layer4Routes(false)
	if err != nil {
		return nil, d.Errf("%v", err)
	}
	srv := &layer4.Server{Listen: []string{b.Address}, Routes: routes, MatchingTimeout: b.MatchingTimeout}
	for name, other := range app.Servers {
		for _, l := range other.Listen {
			if clash, err := ListenersClash(b.Address, l); err == nil && clash {
				return nil, d.Errf("passthrough: listen address %s clashes with %s of another passthrough block (%s): merge the two blocks", b.Address, l, name)
			}
		}
	}
	app.Servers["passthrough"+strconv.Itoa(len(app.Servers))] = srv
	return httpcaddyfile.App{Name: "passthrough", Value: caddyconfig.JSON(app, nil)}, nil
}

func parsePassthroughDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	keys, binds, err := readParentBlock(h)
	if err != nil {
		return nil, h.Errf("passthrough: %v", err)
	}
	h.Next()
	file, line := h.File(), h.Line()
	h.Reset()
	here := fmt.Sprintf("%s:%d (site %s)", file, line, strings.Join(keys, ", "))
	b, err := ParseBlock(h.Dispenser, false)
	if err != nil {
		return nil, err
	}

	httpPort, httpsPort := "80", "443"
	if p, ok := h.Option("http_port").(int); ok {
		httpPort = strconv.Itoa(p)
	}
	if p, ok := h.Option("https_port").(int); ok {
		httpsPort = strconv.Itoa(p)
	}
	var hosts, ports []string
	for _, key := range keys {
		addr, err := httpcaddyfile.ParseAddress(key)
		if err != nil {
			return nil, h.Errf("passthrough: site address %q: %v", key, err)
		}
		port := cmp.Or(addr.Port, httpsPort)
		if addr.Scheme == "http" || (port == httpPort && addr.Scheme != "https") {
			return nil, h.Errf("passthrough: site address %q is served over plain HTTP; passthrough routes TLS ClientHellos, so put it in a site block served over TLS (for example on :%s)", key, httpsPort)
		}
		hosts = append(hosts, addr.Host)
		if !slices.Contains(ports, port) {
			ports = append(ports, port)
		}
	}
	if err := b.CheckSiteOverlap(hosts); err != nil {
		return nil, h.Errf("%v", err)
	}

	// one passthrough block per listener
	seen, _ := h.State[passthroughPortsKey].(map[string]string)
	if seen == nil {
		seen = map[string]string{}
		h.State[passthroughPortsKey] = seen
	}
	for _, port := range ports {
		if prev, dup := seen[port]; dup {
			return nil, h.Errf("passthrough: port %s already has a passthrough block, at %s; one block per listener holds all its routes", port, prev)
		}
		seen[port] = here
	}

	// a standalone passthrough port that is also this site's port
	var app App
	if existing, ok := h.Option("passthrough").(httpcaddyfile.App); ok && json.Unmarshal(existing.Value, &app) == nil {
		for _, srv := range app.Servers {
			for _, l := range srv.Listen {
				for _, port := range ports {
					for _, host := range append(binds, "") {
						if clash, _ := ListenersClash(l, caddy.JoinNetworkAddress("", host, port)); clash {
							return nil, h.Errf("passthrough: the global option `passthrough %s` clashes with this site's listener on port %s: the HTTP server and the standalone passthrough server would share the port at random; keep one passthrough block, in this site block", l, port)
						}
					}
				}
			}
		}
	}

	routes, err := b.Layer4Routes(true)
	if err != nil {
		return nil, h.Errf("%v", err)
	}
	lw := &layer4.ListenerWrapper{Routes: routes, MatchingTimeout: b.MatchingTimeout}
	tlsMod, err := caddy.GetModule("caddy.listeners.tls")
	if err != nil {
		return nil, h.Errf("passthrough: %v", err)
	}

	merged, protocols, err := mergeIntoServersOption(h, ports, binds, lw)
	if err != nil {
		return nil, h.Errf("passthrough: %v", err)
	}
	if protocols == nil || slices.Contains(protocols, "h3") {
		caddy.Log().Named("caddyfile").Warn("passthrough: HTTP/3 does not cover passed-through names: QUIC (UDP) connections reach Caddy, which has no certificate for them; if a backend or a DNS HTTPS record advertises h3 for such a name, clients try Caddy first and fall back to TCP. To serve only TCP on this port, set `servers :"+ports[0]+" { protocols h1 h2 }`",
			zap.Strings("ports", ports), zap.String("file", file), zap.Int("line", line))
	}
	if merged {
		return nil, nil
	}
	return []httpcaddyfile.ConfigValue{
		{Class: "listener_wrapper", Value: lw},
		{Class: "listener_wrapper", Value: tlsMod.New()},
	}, nil
}

// readParentBlock reads the keys and the bind hosts, if any, of the site
// block the directive is in.
func readParentBlock(h httpcaddyfile.Helper) (keys, binds []string, err error) {
	sb, err := caddyinternals.SiteBlock(h)
	if err != nil {
		return nil, nil, err
	}
	for _, seg := range sb.Segments {
		if seg.Directive() != "bind" {
			continue
		}
		for _, tok := range seg[1:] {
			if tok.Text == "{" {
				break
			}
			binds = append(binds, tok.Text)
		}
	}
	if h.Option("default_bind") != nil && len(binds) == 0 {
		binds = append(binds, "(default_bind)")
	}
	return sb.GetKeysText(), binds, nil
}

// mergeIntoServersOption handles a `servers` global option that applies
// to this site's server: httpcaddyfile sets the server's listener
// wrappers from it after the site blocks were read, replacing ours, so
// the passthrough wrapper is put into that option's list (before its
// `tls` wrapper, or first followed by `tls`). It returns whether it did,
// and the option's protocols.
func mergeIntoServersOption(h httpcaddyfile.Helper, ports, binds []string, lw *layer4.ListenerWrapper) (merged bool, protocols []string, err error) {
	err = caddyinternals.EditServersOptions(h, func(la string, protos []string, wrappers []json.RawMessage) ([]json.RawMessage, error) {
		if la == "" {
			return nil, fmt.Errorf("the `servers` global option without a listener address applies to every server, and its settings replace the listener wrappers that passthrough adds; give it the address of this site's listener (as in `servers :%s { ... }`)", ports[0])
		}
		na, err := caddy.ParseNetworkAddress(la)
		if err != nil || !slices.Contains(ports, strconv.Itoa(int(na.StartPort))) {
			return wrappers, nil
		}
		if la != ":"+strconv.Itoa(int(na.StartPort)) || len(binds) > 0 {
			return nil, fmt.Errorf("cannot tell whether `servers %s` applies to this site's server (Caddy matches it to the server's listen address as written, and it or the site names a host or network); write `servers :%d` without a bind in the site, or configure listener_wrappers by hand", la, na.StartPort)
		}
		if len(protos) > 0 {
			protocols = protos
		}
		merged = true
		lwJSON := caddyconfig.JSONModuleObject(lw, "wrapper", "layer4", nil)
		tlsAt := slices.IndexFunc(wrappers, func(raw json.RawMessage) bool {
			var w struct {
				Wrapper string `json:"wrapper"`
			}
			return json.Unmarshal(raw, &w) == nil && w.Wrapper == "tls"
		})
		if tlsAt >= 0 {
			return slices.Insert(slices.Clone(wrappers), tlsAt, lwJSON), nil
		}
		return append([]json.RawMessage{lwJSON, json.RawMessage(`{"wrapper":"tls"}`)}, wrappers...), nil
	})
	return merged, protocols, err
}
