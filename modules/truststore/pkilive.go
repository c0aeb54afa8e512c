package truststore

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"

	"github.com/trustline/trustline/internal/misplaced"
	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/material/castore"
	"github.com/trustline/trustline/modules/verify"
)

func init() {
	caddy.RegisterModule(PKILive{})
}

// PKILive trusts one of Caddy's own `pki` CAs as it is now: its root and
// its current intermediate, read from Caddy's storage, following a renewal
// made by any node sharing it (Caddy's `pki_intermediate` pool is read once
// and goes stale). Intermediates seen earlier stay trusted until they
// expire, so certificates they issued keep verifying during a rollover.
type PKILive struct {
	// Authority is the ID of the CA in the `pki` app. Default: "local".
	Authority string `json:"authority,omitempty"`
	// PollInterval is how often the CA is read again. Default: 5s.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`

	livePool
	unwatch func()
}

// CaddyModule returns the Caddy module information.
func (PKILive) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.ca_pool.source.pki_live",
		New: func() caddy.Module { return new(PKILive) },
	}
}

// Provision reads the CA now and keeps following it.
func (p *PKILive) Provision(ctx caddy.Context) error {
	if p.Authority == "" {
		p.Authority = caddypki.DefaultCAID
	}
	if p.PollInterval == 0 {
		p.PollInterval = caddy.Duration(5 * time.Second)
	}
	appIface, err := ctx.App("pki")
	if err != nil {
		return fmt.Errorf("pki_live: getting the pki app: %w", err)
	}
	ca, err := appIface.(*caddypki.PKI).GetCA(ctx, p.Authority)
	if err != nil {
		return fmt.Errorf("pki_live: %w", err)
	}
	storage := ctx.Storage()
	var mu sync.Mutex
	seen := map[string]*x509.Certificate{} // intermediates seen, by DER
	err = p.Acquire(ctx, material.Spec[*verify.Anchors]{
		Kind: "pki_live",
		Name: p.Authority,
		// keyed per config (by its storage value): a shared watcher must
		// not outlive the storage of the config that created it
		Key:  fmt.Sprintf("pki_live|%s|%p", p.Authority, storage),
		Poll: time.Duration(p.PollInterval),
		Load: func() (*material.Loaded[*verify.Anchors], error) {
			root, inters, err := readCA(storage, p.Authority, ca)
			if err != nil {
				return nil, fmt.Errorf("pki_live %s: %w", p.Authority, err)
			}
			mu.Lock()
			defer mu.Unlock()
			now := time.Now()
			for _, c := range inters {
				seen[string(c.Raw)] = c
			}
			certs := []*x509.Certificate{root}
			for k, c := range seen {
				if now.After(c.NotAfter) {
					delete(seen, k)
					continue
				}
				certs = append(certs, c)
			}
			return loadedAnchors(verify.NewAnchors(certs), digestOf(certs), nil), nil
		},
	})
	if err != nil {
		return fmt.Errorf("loading pki_live %q: %w", p.Authority, err)
	}
	// storage that announces changes (storage redis) is followed at once;
	// polling stays as the fallback
	src := p.Src
	p.unwatch, _ = castore.Watch(storage, p.Authority, func() { go src.Reload() })
	return nil
}

// readCA reads the CA's root and intermediate chain as storage holds them,
// or as provisioned when storage does not hold them.
func readCA(storage certmagic.Storage, id string, ca *caddypki.CA) (*x509.Certificate, []*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stored, err := castore.Load(ctx, storage, id, ca.RootCertificate(), false)
	if errors.Is(err, fs.ErrNotExist) {
		return ca.RootCertificate(), ca.IntermediateCertificateChain(), nil
	}
	if err != nil {
		return nil, nil, err
	}
	return stored.Root, stored.Intermediates, nil
}

// Cleanup stops following the CA.
func (p *PKILive) Cleanup() error {
	if p.unwatch != nil {
		p.unwatch()
	}
	p.Release()
	return nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	trust_pool pki_live [<ca_id>] {
//		poll_interval <duration>
//	}
func (p *PKILive) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		p.Authority = d.Val()
	}
	if d.NextArg() {
		return d.Errf("pki_live: one CA ID at most, got another: %q", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "poll_interval":
			if p.PollInterval != 0 {
				return d.Err("pki_live: duplicate option 'poll_interval'")
			}
			if !d.NextArg() {
				return d.Err("pki_live: poll_interval needs a duration")
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("pki_live: bad poll_interval %q", d.Val())
			}
			p.PollInterval = caddy.Duration(dur)
		default:
			return d.Errf("pki_live: unknown option '%s' (expected poll_interval)%s", d.Val(), misplaced.Hint(d.Val()))
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner            = (*PKILive)(nil)
	_ caddy.CleanerUpper           = (*PKILive)(nil)
	_ caddyfile.Unmarshaler        = (*PKILive)(nil)
	_ caddytls.CA                  = (*PKILive)(nil)
	_ caddytls.CertificateProvider = (*PKILive)(nil)
)
