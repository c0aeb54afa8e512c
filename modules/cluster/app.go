package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
	httpcaddyfile.RegisterGlobalOption("trustline_cluster", parseGlobalOption)
}

// Defaults.
const (
	DefaultCheckInterval      = 5 * time.Second
	DefaultRenewalWindowRatio = 1.0 / 3
	minCheckInterval          = 100 * time.Millisecond
)

// App coordinates the CAs of Caddy's `pki` app across the nodes that
// share Caddy's storage (module and global option `trustline_cluster`).
// For each CA it follows the intermediate as storage holds it (within
// check_interval, at once with `storage redis`) and keeps Caddy's
// in-memory copy in step, so `tls internal` and `acme_server` issue from
// it too; it renews the stored intermediate under a storage lock, one
// node for the whole cluster, ahead of Caddy's own renewal; and it offers
// a forced renewal and a status on the admin API. README.md beside this
// file tells the interplay with Caddy's own maintenance.
type App struct {
	// CAs are the IDs of the pki app's CAs to coordinate. Default:
	// ["local"].
	CAs []string `json:"cas,omitempty"`
	// CheckInterval is how often the stored intermediate is read again
	// (renewal due? renewed by another node?). Notifications from the
	// storage, when it gives them, come in between. Default: 5s.
	CheckInterval caddy.Duration `json:"check_interval,omitempty"`
	// RenewalWindowRatio is the fraction of the intermediate's lifetime
	// left when it is renewed (0 < ratio < 1); it must be larger than the
	// CA's own renewal_window_ratio in the pki app (Caddy's default 0.2),
	// so that the coordinated renewal comes first. Default: 1/3.
	RenewalWindowRatio float64 `json:"renewal_window_ratio,omitempty"`

	cas    map[string]*caState
	logger *zap.Logger
	ctx    context.Context // ends when the app stops
	stop   context.CancelFunc
	wg     *sync.WaitGroup
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "trustline_cluster",
		New: func() caddy.Module { return new(App) },
	}
}

// Validate checks the settings on their own.
func (a *App) Validate() error {
	var errs []error
	if a.CheckInterval != 0 && time.Duration(a.CheckInterval) < minCheckInterval {
		errs = append(errs, fmt.Errorf("check_interval %s: must be at least %s", time.Duration(a.CheckInterval), minCheckInterval))
	}
	if r := a.RenewalWindowRatio; r != 0 && (r <= 0 || r >= 1) {
		errs = append(errs, fmt.Errorf("renewal_window_ratio %v: must be between 0 and 1 (exclusive)", r))
	}
	seen := map[string]bool{}
	for _, id := range a.CAs {
		if id == "" {
			errs = append(errs, errors.New("ca: empty CA ID"))
		}
		if seen[id] {
			errs = append(errs, fmt.Errorf("ca %q listed twice", id))
		}
		seen[id] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("trustline_cluster: %w", err)
	}
	return nil
}

// Provision finds the CAs in the pki app, checks that they can be
// coordinated, and brings Caddy's in-memory copy of each in step with
// storage (before the pki app starts its own maintenance).
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if err := a.Validate(); err != nil {
		return err
	}
	if len(a.CAs) == 0 {
		a.CAs = []string{caddypki.DefaultCAID}
	}
	if a.CheckInterval == 0 {
		a.CheckInterval = caddy.Duration(DefaultCheckInterval)
	}
	if a.RenewalWindowRatio == 0 {
		a.RenewalWindowRatio = DefaultRenewalWindowRatio
	}
	appIface, err := ctx.App("pki")
	if err != nil {
		return fmt.Errorf("trustline_cluster: loading the pki app: %w", err)
	}
	pki := appIface.(*caddypki.PKI)
	a.cas = map[string]*caState{}
	a.ctx, a.stop = context.WithCancel(context.Background())
	a.wg = new(sync.WaitGroup)
	registerMetrics(ctx)
	for _, id := range a.CAs {
		ca, err := pki.GetCA(ctx, id)
		if err != nil {
			return fmt.Errorf("trustline_cluster: ca %q: %w (configured in the pki app: %v)", id, err, slices.Sorted(maps.Keys(pki.CAs)))
		}
		if ca.Intermediate != nil {
			return fmt.Errorf("trustline_cluster: ca %q: its intermediate is configured from files in the pki app; "+
				"only an intermediate that Caddy generates (and keeps in storage) can be renewed by the cluster", id)
		}
		if ca.RenewalWindowRatio >= a.RenewalWindowRatio {
			return fmt.Errorf("trustline_cluster: renewal_window_ratio %.3g must be larger than the renewal_window_ratio %.3g "+
				"of pki ca %q, or Caddy's own, uncoordinated renewal runs first", a.RenewalWindowRatio, ca.RenewalWindowRatio, id)
		}
		st := &caState{id: id, ca: ca, storage: ctx.Storage(), ratio: a.RenewalWindowRatio, done: a.ctx.Done(),
			logger: a.logger.With(zap.String("ca", id)), wake: make(chan struct{}, 1), stats: statsFor(id)}
		if err := st.provision(ctx); err != nil {
			return fmt.Errorf("trustline_cluster: ca %q: %w", id, err)
		}
		a.cas[id] = st
	}
	return nil
}

// active is the running app, for the admin API (Caddy gives admin.api
// modules no config): set by Start, cleared by Stop unless a newer config
// has started since.
var active atomic.Pointer[App]

// Start begins the periodic checks and follows the storage's
// notifications.
func (a *App) Start() error {
	for _, st := range a.cas {
		a.wg.Go(func() { st.run(a.ctx, time.Duration(a.CheckInterval)) })
	}
	active.Store(a)
	a.logger.Info("cluster coordination of the pki CAs started",
		zap.Strings("cas", a.CAs),
		zap.Duration("check_interval", time.Duration(a.CheckInterval)),
		zap.String("renewal_window_ratio", strconv.FormatFloat(a.RenewalWindowRatio, 'g', 3, 64)))
	return nil
}

// Stop ends the checks; a renewal in progress finishes first, and a lock
// held for an admin request is released.
func (a *App) Stop() error {
	active.CompareAndSwap(a, nil)
	return a.Cleanup()
}

// Cleanup stops the checks, also when Start ran but Stop did not (a
// config that failed to start).
func (a *App) Cleanup() error {
	if a.stop != nil {
		a.stop()
		a.wg.Wait()
	}
	return nil
}

// UnmarshalCaddyfile sets up the app from the global option.
//
// Syntax:
//
//	trustline_cluster {
//		ca                   <id>...        # default: local
//		check_interval       <duration>     # default: 5s
//		renewal_window_ratio <ratio>        # default: 0.333
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.Errf("trustline_cluster: unexpected argument %q (options go in a block)", d.Val())
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("trustline_cluster: duplicate option '%s'", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("trustline_cluster: %s needs a value", opt)
		}
		if opt != "ca" && len(args) > 1 {
			return d.Errf("trustline_cluster: %s takes one value, got %d", opt, len(args))
		}
		switch opt {
		case "ca":
			a.CAs = append(a.CAs, args...)
		case "check_interval":
			dur, err := caddy.ParseDuration(args[0])
			if err != nil {
				return d.Errf("trustline_cluster: check_interval '%s': %v", args[0], err)
			}
			if dur < minCheckInterval {
				return d.Errf("trustline_cluster: check_interval %s: must be at least %s", dur, minCheckInterval)
			}
			a.CheckInterval = caddy.Duration(dur)
		case "renewal_window_ratio":
			r, err := strconv.ParseFloat(args[0], 64)
			if err != nil || r <= 0 || r >= 1 {
				return d.Errf("trustline_cluster: renewal_window_ratio '%s': must be a number between 0 and 1 (exclusive)", args[0])
			}
			a.RenewalWindowRatio = r
		default:
			return d.Errf("trustline_cluster: unknown option '%s' (expected ca, check_interval or renewal_window_ratio)", opt)
		}
	}
	return nil
}

// parseGlobalOption reads the trustline_cluster global option (syntax on
// UnmarshalCaddyfile) into the app of that name.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("trustline_cluster: the global option is given twice (list several CAs in one block: ca <id>...)")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "trustline_cluster", Value: caddyconfig.JSON(app, nil)}, nil
}

// Interface guards
var (
	_ caddy.App             = (*App)(nil)
	_ caddy.Provisioner     = (*App)(nil)
	_ caddy.Validator       = (*App)(nil)
	_ caddy.CleanerUpper    = (*App)(nil)
	_ caddyfile.Unmarshaler = (*App)(nil)
)
