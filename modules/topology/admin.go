package topology

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/modules/material"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// routePattern is the admin API route of the report.
const routePattern = "/trustline/topology"

// Admin serves the topology report of the running config on the admin
// API: GET /trustline/topology (JSON), ?format=table for people,
// ?format=html for a self-contained page with the picture (?refresh=N
// reloads it every N seconds), ?format=svg for the bare picture.
//
// Caddy provisions admin.api modules with no config and never cleans them
// up, so it keeps no state: each request analyses the running config (at
// most maxReports at once, see running.go). Provisioning registers the
// certificate expiry gauges (metrics.go).
type Admin struct{}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.trustline_topology",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Provision registers the certificate expiry gauges in ctx's metrics
// registry (Caddy makes one per config load).
func (*Admin) Provision(ctx caddy.Context) error {
	material.RegisterCollectors(ctx, "the certificate expiry gauge", collector{logger: ctx.Logger()})
	return nil
}

// Routes returns the admin route.
func (*Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: routePattern, Handler: caddy.AdminHandlerFunc(serveTopology)}}
}

func serveTopology(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use GET", r.Method)}
	}
	q := r.URL.Query()
	format := cmp.Or(q.Get("format"), "json")
	if err := checkReportFormat(format); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	refresh := 0
	if s := q.Get("refresh"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 86400 || format != "html" {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("refresh %q: want a number of seconds from 1 to 86400, with format=html", s)}
		}
		refresh = n
	}
	rep, err := runningReport()
	if err == nil {
		err = serveReport(w, rep, format, refresh)
	}
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, errReportsBusy) {
			w.Header().Set("Retry-After", retryAfter)
			status = http.StatusServiceUnavailable
		}
		return caddy.APIError{HTTPStatus: status, Err: err}
	}
	return nil
}

// checkReportFormat rejects a format the CLI and the admin endpoint do not
// write.
func checkReportFormat(format string) error {
	if !slices.Contains([]string{"table", "json", "html", "svg"}, format) {
		return fmt.Errorf("format %q: want table or json, or html or svg for the picture", format)
	}
	return nil
}

// serveReport writes rep in format (json, table, html or svg; refresh is
// the page's meta refresh, html only) with the headers every format gets:
// the admin endpoint and the trustline_topology handler serve through it.
func serveReport(w http.ResponseWriter, rep *Report, format string, refresh int) error {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	switch format {
	case "json":
		h.Set("Content-Type", "application/json")
	case "table":
		h.Set("Content-Type", "text/plain; charset=utf-8")
	case "html", "svg":
		// the page loads nothing and runs nothing: its style and its
		// picture are inline
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("Content-Type", "text/html; charset=utf-8")
		if format == "svg" {
			h.Set("Content-Type", "image/svg+xml")
		}
		// days left are counted from the time of the report: now
		return writePicture(w, rep, format, refresh)
	}
	return WriteTableOrJSON(w, rep, format)
}

// Interface guards
var (
	_ caddy.AdminRouter = (*Admin)(nil)
	_ caddy.Provisioner = (*Admin)(nil)
)
