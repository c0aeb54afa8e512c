package explain

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/internal/caddyinternals"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// routePattern is the admin API route of explain.
const routePattern = "/trustline/explain"

// Admin answers POST /trustline/explain on the admin API (Caddy's origin
// checks apply): the body is a Request as JSON (the chain as PEM, never a
// key), the answer the Report as JSON, made by the running config's own
// modules with the material in force now. Nothing the request names is
// fetched (no AIA, CRL distribution point or OCSP responder), and
// --upstream dials only an upstream of the config.
type Admin struct{}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.trustline_explain",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Routes returns the admin route.
func (*Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: routePattern, Handler: caddy.AdminHandlerFunc(serveExplain)}}
}

// maxExplains bounds the explanations made at once; one over that waits
// up to explainWait, then gets 503.
const maxExplains = 2

var (
	explainSlots = make(chan struct{}, maxExplains)
	explainWait  = time.Second
)

func serveExplain(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use POST with the request as JSON", r.Method)}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("reading the request: %w", err)}
	}
	if len(body) > MaxBodyBytes {
		return caddy.APIError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("request larger than %d bytes", MaxBodyBytes)}
	}
	req, err := ParseRequest(body)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	select {
	case explainSlots <- struct{}{}:
	case <-time.After(explainWait):
		w.Header().Set("Retry-After", "2")
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("explanations are being made; try again shortly")}
	}
	defer func() { <-explainSlots }()
	rep, err := explainRunning(req)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusUnprocessableEntity, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(rep)
}

// explainRunning explains req against the config Caddy runs now (never
// one being loaded).
func explainRunning(req *Request) (rep *Report, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("explaining: %v", v)
		}
	}()
	cfg, err := caddyinternals.RunningConfig()
	if err != nil {
		return nil, err
	}
	return Explain(caddy.ActiveContext(), cfg, req, "running instance")
}

// Interface guards
var _ caddy.AdminRouter = (*Admin)(nil)
