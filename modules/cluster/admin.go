package cluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin routes of the cluster on Caddy's admin API (README.md, "Admin
// API"): GET /trustline/cluster, the status of each coordinated CA; POST
// /trustline/cluster/renew?ca=<id>[&wait=<duration>][&hold=<duration>], a
// forced renewal. Caddy gives admin.api modules no config: the routes find
// the running app through a pointer set by its Start.
type Admin struct{}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.trustline_cluster",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Routes returns the admin routes.
func (*Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/trustline/cluster", Handler: caddy.AdminHandlerFunc(serveStatus)},
		{Pattern: "/trustline/cluster/renew", Handler: caddy.AdminHandlerFunc(serveRenew)},
	}
}

const (
	defaultRenewWait = 60 * time.Second
	maxHold          = 10 * time.Minute
)

func running() (*App, error) {
	a := active.Load()
	if a == nil {
		return nil, caddy.APIError{HTTPStatus: http.StatusNotFound,
			Err: errors.New("trustline_cluster is not configured (add the trustline_cluster global option)")}
	}
	return a, nil
}

func (a *App) caByID(id string) (*caState, error) {
	if id == "" {
		if len(a.CAs) == 1 {
			return a.cas[a.CAs[0]], nil
		}
		return nil, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("name the CA: ?ca=<id> (coordinated: %v)", a.CAs)}
	}
	st := a.cas[id]
	if st == nil {
		return nil, caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("ca %q is not coordinated by trustline_cluster (coordinated: %v)", id, a.CAs)}
	}
	return st, nil
}

func durationParam(r *http.Request, name string, def, limit time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := caddy.ParseDuration(v)
	if err != nil || d < 0 || d > limit {
		return 0, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("%s=%q: want a duration from 0 to %s", name, v, limit)}
	}
	return d, nil
}

func serveRenew(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use POST", r.Method)}
	}
	a, err := running()
	if err != nil {
		return err
	}
	st, err := a.caByID(r.URL.Query().Get("ca"))
	if err != nil {
		return err
	}
	wait, err := durationParam(r, "wait", defaultRenewWait, time.Hour)
	if err != nil {
		return err
	}
	hold, err := durationParam(r, "hold", 0, maxHold)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	st.logger.Info("forced renewal of the intermediate requested on the admin API",
		zap.String("remote_addr", r.RemoteAddr), zap.Duration("hold", hold))
	res, err := st.renew(ctx, true, hold)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusGatewayTimeout
		}
		return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf("ca %q: %w", st.id, err)}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(res)
}

// certInfo describes a certificate in the status.
type certInfo struct {
	Serial    string    `json:"serial"`
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	RenewAt   time.Time `json:"renew_at,omitzero"`
}

// caStatus is one CA in the status.
type caStatus struct {
	CA           string     `json:"ca"`
	Root         *certInfo  `json:"root,omitempty"`
	Intermediate *certInfo  `json:"intermediate,omitempty"`
	CaddyInStep  bool       `json:"caddy_in_step"`
	CaddySerial  string     `json:"caddy_intermediate_serial,omitempty"`
	LastCheck    *time.Time `json:"last_check,omitempty"`
	Error        string     `json:"error,omitempty"`
	Renewals     uint64     `json:"renewals"`
	Followed     uint64     `json:"followed"`
	// RollbacksRefused counts stored intermediates refused for being
	// older than the one held.
	RollbacksRefused uint64 `json:"rollbacks_refused"`
}

type status struct {
	Node string     `json:"node"`
	CAs  []caStatus `json:"cas"`
}

func serveStatus(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use GET", r.Method)}
	}
	a, err := running()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	out := status{Node: host}
	for _, id := range a.CAs {
		st := a.cas[id]
		cs := caStatus{CA: id, Renewals: st.stats.renewed.Load(), Followed: st.stats.followed.Load(),
			RollbacksRefused: st.stats.rollbacks.Load()}
		if cur := st.current.Load(); cur != nil {
			cs.Root = info(cur.Root, 0)
			cs.Intermediate = info(cur.Issuer(), st.ratio)
			if _, chain := st.inMemory(); len(chain) > 0 {
				cs.CaddySerial = material.SerialString(chain[0])
				cs.CaddyInStep = chain[0].Equal(cur.Issuer())
			}
		}
		if ns := st.checked.Load(); ns != 0 {
			t := time.Unix(0, ns).UTC()
			cs.LastCheck = &t
		}
		if e := st.lastErr.Load(); e != nil {
			cs.Error = *e
		}
		out.CAs = append(out.CAs, cs)
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

func info(c *x509.Certificate, ratio float64) *certInfo {
	ci := &certInfo{Serial: material.SerialString(c), Subject: c.Subject.String(), NotBefore: c.NotBefore, NotAfter: c.NotAfter}
	if ratio > 0 {
		ci.RenewAt = renewAt(c, ratio)
	}
	return ci
}

// Interface guards
var _ caddy.AdminRouter = (*Admin)(nil)
