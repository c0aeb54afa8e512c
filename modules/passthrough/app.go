package passthrough

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/mholt/caddy-l4/layer4"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App runs passthrough servers, ordinary caddy-l4 servers (the JSON of
// apps.layer4.servers, run by caddy-l4's code), on ports with no HTTP
// server. It is not the layer4 app so that the `passthrough` and `layer4`
// global options work side by side, and so that a port that clashes with
// an HTTP or layer4 server's is refused at load: both would share it
// through SO_REUSEPORT, the kernel splitting connections at random.
type App struct {
	// The servers, by name.
	Servers map[string]*layer4.Server `json:"servers,omitempty"`

	l4 *layer4.App
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "passthrough",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision checks the listeners and provisions the caddy-l4 servers.
func (a *App) Provision(ctx caddy.Context) error {
	if err := a.checkClashes(ctx); err != nil {
		return err
	}
	a.l4 = &layer4.App{Servers: a.Servers}
	return a.l4.Provision(ctx)
}

// Start starts the servers.
func (a *App) Start() error { return a.l4.Start() }

// Stop closes the listeners; proxied connections finish on their own
// (and are bounded by the handlers' grace_period and max_lifetime).
func (a *App) Stop() error { return a.l4.Stop() }

// listener is one listen address of some server, for clash checks.
type listener struct {
	owner string
	addr  caddy.NetworkAddress
}

func (a *App) checkClashes(ctx caddy.Context) error {
	var mine, others []listener
	// add lists a server's listeners; a bad address is an error for our
	// own servers, and left to the other apps to report for theirs
	add := func(to *[]listener, owner string, listen []string) (bad error) {
		for _, l := range listen {
			addrs, err := expandListen(l)
			if err != nil && bad == nil {
				bad = fmt.Errorf("%s: listener %q: %w", owner, l, err)
			}
			for _, ad := range addrs {
				*to = append(*to, listener{owner, ad})
			}
		}
		return bad
	}
	for _, name := range slices.Sorted(maps.Keys(a.Servers)) {
		if err := add(&mine, "passthrough server "+name, a.Servers[name].Listen); err != nil {
			return err
		}
	}
	if app, err := ctx.AppIfConfigured("http"); err == nil {
		if httpApp, ok := app.(*caddyhttp.App); ok {
			for name, srv := range httpApp.Servers {
				_ = add(&others, "HTTP server "+name, srv.Listen)
			}
		}
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("passthrough: loading the http app to check listeners: %w", err)
	}
	if app, err := ctx.AppIfConfigured("layer4"); err == nil {
		if l4, ok := app.(*layer4.App); ok {
			for name, srv := range l4.Servers {
				_ = add(&others, "layer4 server "+name, srv.Listen)
			}
		}
	}
	var errs []error
	for i, m := range mine {
		for _, o := range append(others, mine[:i]...) {
			if o.owner != m.owner && clash(m.addr, o.addr) {
				errs = append(errs, fmt.Errorf("passthrough: %s listens on %s, which clashes with %s on %s: both would accept on port %d and the kernel would split connections between them at random; to route in front of an HTTP server on that port, put the passthrough block in one of its site blocks instead",
					m.owner, m.addr, o.owner, o.addr, m.addr.StartPort))
			}
		}
	}
	return errors.Join(errs...)
}

func expandListen(l string) ([]caddy.NetworkAddress, error) {
	na, err := caddy.ParseNetworkAddress(caddy.NewReplacer().ReplaceAll(l, ""))
	if err != nil {
		return nil, err
	}
	return na.Expand(), nil
}

// clash reports whether two single-port listen addresses would take the
// same connections.
func clash(a, b caddy.NetworkAddress) bool {
	if a.IsUnixNetwork() || b.IsUnixNetwork() {
		return a.IsUnixNetwork() && b.IsUnixNetwork() && a.Host == b.Host
	}
	if streamNetwork(a.Network) != streamNetwork(b.Network) || a.StartPort != b.StartPort {
		return false
	}
	if isAnyHost(a.Host) || isAnyHost(b.Host) {
		return true
	}
	ipA, errA := netip.ParseAddr(a.Host)
	ipB, errB := netip.ParseAddr(b.Host)
	if errA == nil && errB == nil {
		return ipA.Unmap() == ipB.Unmap()
	}
	return a.Host == b.Host
}

func streamNetwork(n string) string {
	switch n {
	case "", "tcp", "tcp4", "tcp6":
		return "tcp"
	}
	return n
}

func isAnyHost(h string) bool {
	return h == "" || h == "0.0.0.0" || h == "::" || h == "[::]"
}

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)

// ListenersClash reports whether two listen addresses (Caddy network
// addresses) would accept on the same port and interface.
func ListenersClash(a, b string) (bool, error) {
	as, err := expandListen(a)
	if err != nil {
		return false, err
	}
	bs, err := expandListen(b)
	if err != nil {
		return false, err
	}
	for _, x := range as {
		for _, y := range bs {
			if clash(x, y) {
				return true, nil
			}
		}
	}
	return false, nil
}
