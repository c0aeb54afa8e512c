package topology

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The trustline_topology directive ends the route, like respond, and is
// ordered just before it, so that access control (basic_auth,
// peer_authorize, forward_auth) runs first.
func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("trustline_topology", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		m := new(Handler)
		return m, m.UnmarshalCaddyfile(h.Dispenser)
	})
	httpcaddyfile.RegisterDirectiveOrder("trustline_topology", httpcaddyfile.Before, "respond")
}

// Handler serves the topology report of the running config from a site,
// as the admin endpoint does (same renderer and headers), so that an
// operator can open the picture in a browser: Caddy's admin API refuses a
// browser that opens a URL directly, and a site can put the page behind
// its own access control:
//
//	handle /tls-topology {
//		basic_auth {
//			ops $2a$14$...
//		}
//		trustline_topology
//	}
//
// It answers GET and HEAD and ends the route. Every request analyses the
// running config (an unchanged store is decrypted once; the reports made
// at once are bounded, 503 with Retry-After over the bound). The report
// names files, hosts, upstreams and certificate subjects (never passwords
// or keys): serve it only to people who may see the config.
type Handler struct {
	// Format of the answer: "html" (a self-contained page with the
	// picture), "svg" (the bare picture), "json" or "table". Default html.
	Format string `json:"format,omitempty"`

	// Refresh, in seconds, makes the page reload itself (a meta refresh,
	// no script); html only, 1 to 86400. Default 0: no reload.
	Refresh int `json:"refresh,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.trustline_topology",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills in the default format.
func (h *Handler) Provision(caddy.Context) error {
	h.Format = cmp.Or(h.Format, "html")
	return nil
}

// Validate rejects an unknown format and a refresh out of range or not
// with html.
func (h *Handler) Validate() error {
	err := checkFormat(h.Format)
	switch {
	case err != nil:
	case h.Refresh != 0 && (h.Refresh < 1 || h.Refresh > 86400):
		err = fmt.Errorf("refresh %d: want a number of seconds from 1 to 86400", h.Refresh)
	case h.Refresh != 0 && h.Format != "" && h.Format != "html":
		err = fmt.Errorf("refresh applies to format html only, not %s", h.Format)
	default:
		return nil
	}
	return fmt.Errorf("trustline_topology: %w", err)
}

// checkFormat rejects a format the handler does not serve ("" is html).
func checkFormat(format string) error {
	if format != "" && !slices.Contains([]string{"html", "svg", "json", "table"}, format) {
		return fmt.Errorf("format %q: want html, svg, json or table", format)
	}
	return nil
}

// ServeHTTP writes the report of the running config.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("trustline_topology: method %s not allowed: use GET", r.Method))
	}
	// Reading the running config takes Caddy's config lock, which Caddy's
	// Stop holds while it waits for in-flight requests (this one
	// included): read it aside and give up after a while, so a request
	// that arrives as Caddy stops never holds the shutdown up.
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := runningReport()
		done <- result{rep, err}
	}()
	timer := time.NewTimer(runningConfigWait)
	defer timer.Stop()
	select {
	case res := <-done:
		if errors.Is(res.err, errReportsBusy) {
			w.Header().Set("Retry-After", retryAfter)
			return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("trustline_topology: %w", res.err))
		}
		if res.err == nil {
			res.err = serveReport(w, res.rep, h.Format, h.Refresh)
		}
		if res.err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("trustline_topology: %w", res.err))
		}
		return nil
	case <-timer.C:
		w.Header().Set("Retry-After", "5")
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("trustline_topology: the running config is locked (Caddy is loading a config or stopping); try again"))
	case <-r.Context().Done():
		return r.Context().Err()
	}
}

// runningConfigWait bounds the wait for Caddy's config lock.
var runningConfigWait = 5 * time.Second

// UnmarshalCaddyfile sets up the handler. Syntax:
//
//	trustline_topology [html|svg|json|table] {
//		format  html|svg|json|table
//		refresh <seconds>
//	}
//
// The format is given as the argument or in the block, not both.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const directive = "trustline_topology"
	format := func() error {
		if err := checkFormat(d.Val()); err != nil {
			return d.Errf("%s: %v", directive, err)
		}
		h.Format = d.Val()
		return nil
	}
	d.Next() // the directive
	if d.NextArg() {
		if err := format(); err != nil {
			return err
		}
		if d.NextArg() {
			return d.Errf("%s: unexpected argument %q: the only argument is the format", directive, d.Val())
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "format":
			if h.Format != "" {
				return d.Errf("%s: duplicate option 'format' (or the format given twice, as the argument and in the block)", directive)
			}
			if !d.NextArg() {
				return d.Errf("%s: format needs a value: html, svg, json or table", directive)
			}
			if err := format(); err != nil {
				return err
			}
		case "refresh":
			if h.Refresh != 0 {
				return d.Errf("%s: duplicate option 'refresh'", directive)
			}
			if !d.NextArg() {
				return d.Errf("%s: refresh needs a number of seconds", directive)
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 || n > 86400 {
				return d.Errf("%s: refresh %q: want a number of seconds from 1 to 86400", directive, d.Val())
			}
			h.Refresh = n
		default:
			return d.Errf("%s: unknown option %q (options: format, refresh)", directive, opt)
		}
		if d.NextArg() {
			return d.Errf("%s: %s takes one value, got also %q", directive, opt, d.Val())
		}
	}
	if h.Refresh != 0 && h.Format != "" && h.Format != "html" {
		return d.Errf("%s: refresh applies to format html only, not %s", directive, h.Format)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
