package topology

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// routePattern is the admin API route of the report.
const routePattern = "/trustline/topology"

// Admin serves the topology report of the running config on the admin
// API: GET /trustline/topology (JSON), ?format=table for people.
//
// Caddy provisions admin.api modules with no config of their own and never
// cleans them up, so it keeps no state: each request reads the running
// config and analyses it. Provisioning registers the certificate expiry
// gauges in the config's metrics registry (see metrics.go).
type Admin struct{}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.trustline_topology",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Provision registers the certificate expiry collector.
func (*Admin) Provision(ctx caddy.Context) error {
	registerMetrics(ctx)
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
	format := r.URL.Query().Get("format")
	switch format {
	case "", "json":
		format = "json"
	case "table":
	default:
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("format %q: want table or json", format)}
	}
	rep, err := runningReport()
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	if format == "json" {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	return writeReport(w, rep, format)
}

// Interface guards
var (
	_ caddy.AdminRouter = (*Admin)(nil)
	_ caddy.Provisioner = (*Admin)(nil)
)
