package spiffeworkload

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

func init() {
	caddy.RegisterModule(Pool{})
}

// Pool trusts the X.509 bundles the SPIFFE Workload API (a SPIRE agent)
// serves the workload, its own trust domain's and the federated ones (or
// only those of TrustDomains), each one's authorities for SVIDs of their
// own trust domain only (verify.Anchors). Consumers that read the pool at
// each handshake (live_trust, the mtls transport) see the bundle changes
// the agent streams; when the agent goes away the last bundles stay.
type Pool struct {
	// TrustDomains keeps only the bundles of these trust domains, e.g.
	// ["example.org", "partner.test"]; each must be served by the agent
	// (a version without one is refused and the last good pool stays).
	// Default: every bundle the agent serves.
	TrustDomains []string `json:"trust_domains,omitempty"`
	Agent

	material.Held[*verify.Anchors]
}

// CaddyModule returns the Caddy module information.
func (Pool) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.ca_pool.source.spiffe_workload",
		New: func() caddy.Module { return new(Pool) },
	}
}

// Provision connects to the agent (or joins the connection another
// module holds), waits up to Wait for the bundles, and follows them.
func (p *Pool) Provision(ctx caddy.Context) error {
	addr, err := socketAddress(p.Socket, p.InsecureTCP)
	if err != nil {
		return fmt.Errorf("trust pool spiffe_workload: %w", err)
	}
	var tds []spiffeid.TrustDomain
	var names []string
	for _, s := range p.TrustDomains {
		td, err := trustDomain(s)
		if err != nil {
			return fmt.Errorf("trust pool spiffe_workload: trust domain %q: %w", s, err)
		}
		tds, names = append(tds, td), append(names, td.Name())
	}
	name := addr
	if len(names) > 0 {
		name += " " + strings.Join(names, ",")
	}
	load := func(x *workloadapi.X509Context) (*material.Loaded[*verify.Anchors], error) {
		l, err := bundleAnchors(x, tds)
		if err != nil {
			return nil, fmt.Errorf("the agent at %s: %w", addr, err)
		}
		return l, nil
	}
	err = provision(ctx, &p.Agent, &p.Held, addr, load, material.Spec[*verify.Anchors]{
		Kind: "spiffe_workload",
		Name: name,
		Key:  "spiffe_workload|pool|" + addr + "|" + strings.Join(names, ","),
	}, &follower{
		StaleSource: StaleSource{Source: "trust pool spiffe_workload " + name, Pool: true},
		maxStale:    cmp.Or(time.Duration(p.MaxStale), DefaultPoolMaxStale),
	})
	if err != nil {
		return fmt.Errorf("trust pool spiffe_workload: %w", err)
	}
	return nil
}

// bundleAnchors builds one version of the pool from the agent's answer:
// the bundles of tds (every bundle when tds is empty), each one's
// authorities vouching for its own trust domain only (verify.Anchors).
func bundleAnchors(x *workloadapi.X509Context, tds []spiffeid.TrustDomain) (*material.Loaded[*verify.Anchors], error) {
	if x == nil || x.Bundles == nil {
		return nil, errors.New("no bundles yet")
	}
	bundles := x.Bundles.Bundles() // sorted by trust domain
	for _, td := range tds {
		if !x.Bundles.Has(td) {
			var served []string
			for _, b := range bundles {
				served = append(served, b.TrustDomain().Name())
			}
			return nil, fmt.Errorf("no bundle for trust domain %s (the agent serves: %s)", td.Name(), strings.Join(served, ", "))
		}
	}
	var parts [][]byte
	var domains []verify.Domain
	for _, b := range bundles {
		td := b.TrustDomain()
		if len(tds) > 0 && !slices.Contains(tds, td) {
			continue
		}
		auth := b.X509Authorities()
		if len(auth) == 0 {
			return nil, fmt.Errorf("the bundle of %s has no X.509 authorities", td.Name())
		}
		for _, c := range auth {
			if !c.BasicConstraintsValid || !c.IsCA {
				return nil, fmt.Errorf("the bundle of %s: certificate %q (serial %s) is not a CA certificate",
					td.Name(), c.Subject, material.SerialString(c))
			}
		}
		parts = append(append(parts, []byte(td.Name())), raws(auth)...)
		domains = append(domains, verify.Domain{TrustDomain: td, Authorities: auth, Origin: "the agent's bundle of " + td.Name()})
	}
	anc, err := verify.NewSPIFFEAnchors(domains)
	if err != nil {
		return nil, err
	}
	return &material.Loaded[*verify.Anchors]{Value: anc, Certificates: anc.Certificates(), Digest: digestOf(parts)}, nil
}

// trustDomain parses a trust domain name (or spiffe://<name>); a SPIFFE
// ID with a path is refused rather than cut down to its trust domain.
func trustDomain(s string) (spiffeid.TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return td, err
	}
	if s != td.Name() && s != td.IDString() {
		return td, errors.New("expected a trust domain name such as example.org, not a SPIFFE ID")
	}
	return td, nil
}

// CertPool returns the current pool (lock-free); it implements
// caddytls.CA. Never nil once provisioned, even after Cleanup (the last
// bundles held: a nil pool would mean the system roots).
func (p *Pool) CertPool() *x509.CertPool {
	if a := p.CurrentAnchors(); a != nil {
		return a.CertPool()
	}
	return nil
}

// Certificates returns the current authorities; it implements
// caddytls.CertificateProvider, so Caddy's `combined` pool can hold ours.
func (p *Pool) Certificates() []*x509.Certificate {
	if a := p.CurrentAnchors(); a != nil {
		return a.Certificates()
	}
	return nil
}

// CurrentAnchors returns the current version (lock-free); it implements
// verify.AnchorSource. Nil only when Provision failed.
func (p *Pool) CurrentAnchors() *verify.Anchors {
	if p.Src == nil {
		return nil
	}
	return p.Src.Current()
}

// Version is the current version, as a value that changes at each update.
func (p *Pool) Version() any { return p.Src.CurrentLoaded() }

// OnChange runs f after each change of the bundles.
func (p *Pool) OnChange(f func()) (cancel func()) { return p.Src.OnChange(f) }

// Cleanup stops following the agent; the last module using the socket
// closes the connection.
func (p *Pool) Cleanup() error {
	p.release()
	p.Release()
	return nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	trust_pool spiffe_workload {
//		socket        unix:///run/spire/agent.sock
//		trust_domains <trust_domain...>
//		wait          <duration>
//		max_stale     <duration>
//		insecure_tcp
//	}
func (p *Pool) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		return d.Errf("trust pool spiffe_workload: unexpected argument %q (options go in a block)", d.Val())
	}
	return parseAgentBlock(d, "trust pool spiffe_workload", &p.Agent, &p.TrustDomains)
}

// Interface guards
var (
	_ caddy.Provisioner            = (*Pool)(nil)
	_ caddy.CleanerUpper           = (*Pool)(nil)
	_ caddyfile.Unmarshaler        = (*Pool)(nil)
	_ caddytls.CA                  = (*Pool)(nil)
	_ caddytls.CertificateProvider = (*Pool)(nil)
	_ verify.AnchorSource          = (*Pool)(nil)
)
