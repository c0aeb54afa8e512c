package spiffeworkload

import (
	"crypto/sha256"
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
)

func init() {
	caddy.RegisterModule(Pool{})
}

// anchors is one version of the pool: the pool crypto/tls verifies
// against and the authorities it holds.
type anchors struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
}

// Pool trusts the X.509 bundles the SPIFFE Workload API (a SPIRE agent)
// serves the workload: its own trust domain's and the federated ones,
// optionally only those of TrustDomains. Each bundle's authorities vouch
// only for SVIDs of their own trust domain (material.ScopeAnchors, read by
// live_trust and every identity consumer). Bundle changes the agent
// streams are in force for the next handshake of the consumers that read
// the pool on every handshake (live_trust, the mtls transport); when the
// agent goes away the last bundles stay.
type Pool struct {
	// Socket is the Workload API address: `unix:///path` or
	// `tcp://ip:port`. Default: the SPIFFE_ENDPOINT_SOCKET environment
	// variable.
	Socket string `json:"socket,omitempty"`
	// TrustDomains keeps only the bundles of these trust domains, e.g.
	// ["example.org", "partner.test"]; each must be served by the agent
	// (a version without one is refused and the last good pool stays).
	// Default: every bundle the agent serves.
	TrustDomains []string `json:"trust_domains,omitempty"`
	// Wait is how long the config load waits for the agent to answer with
	// the bundles (for a pod whose agent starts beside it). Default: 0, an
	// unreachable agent or a missing trust domain fails the load at once.
	Wait caddy.Duration `json:"wait,omitempty"`

	material.Held[*anchors]
	addr     string
	agent    *agent
	unlisten func()
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
	addr, err := socketAddress(p.Socket)
	if err != nil {
		return fmt.Errorf("trust pool spiffe_workload: %w", err)
	}
	var tds []spiffeid.TrustDomain
	for _, s := range p.TrustDomains {
		td, err := trustDomain(s)
		if err != nil {
			return fmt.Errorf("trust pool spiffe_workload: trust domain %q: %w", s, err)
		}
		tds = append(tds, td)
	}
	deadline := time.Now().Add(time.Duration(p.Wait))
	a, err := acquireAgent(ctx, addr, time.Duration(p.Wait))
	if err != nil {
		return fmt.Errorf("trust pool spiffe_workload: %w", err)
	}
	p.addr, p.agent = addr, a
	if err := a.waitFor(deadline, func(x *workloadapi.X509Context) error {
		_, _, err := bundleAnchors(x, tds)
		return err
	}); err != nil {
		return fmt.Errorf("trust pool spiffe_workload: the agent at %s: %w", addr, err)
	}
	var names []string
	for _, td := range tds {
		names = append(names, td.Name())
	}
	name := addr
	if len(names) > 0 {
		name += " " + strings.Join(names, ",")
	}
	err = p.Acquire(ctx, material.Spec[*anchors]{
		Kind: "spiffe_workload",
		Name: name,
		Key:  "spiffe_workload|pool|" + addr + "|" + strings.Join(names, ","),
		// the agent's answers drive the reloads; this is a safety net
		Poll: time.Minute,
		Load: func() (*material.Loaded[*anchors], error) {
			anc, digest, err := bundleAnchors(a.current.Load(), tds)
			if err != nil {
				return nil, fmt.Errorf("the agent at %s: %w", addr, err)
			}
			return &material.Loaded[*anchors]{Value: anc, Certificates: anc.certs, Digest: digest}, nil
		},
	})
	if err != nil {
		return fmt.Errorf("trust pool spiffe_workload: %w", err)
	}
	src := p.Src
	p.unlisten = a.onUpdate(func() { _ = src.Reload() })
	return nil
}

// bundleAnchors builds one version of the pool from the agent's answer:
// the bundles of tds (every bundle when tds is empty), each one's
// authorities declared as its trust domain's only, before the version is
// returned (and so before any handshake can verify against it).
func bundleAnchors(x *workloadapi.X509Context, tds []spiffeid.TrustDomain) (*anchors, [32]byte, error) {
	var digest [32]byte
	if x == nil || x.Bundles == nil {
		return nil, digest, errors.New("no bundles yet")
	}
	bundles := x.Bundles.Bundles() // sorted by trust domain
	var served []string
	for _, b := range bundles {
		served = append(served, b.TrustDomain().Name())
	}
	if len(tds) > 0 {
		for _, td := range tds {
			if !slices.Contains(served, td.Name()) {
				return nil, digest, fmt.Errorf("no bundle for trust domain %s (the agent serves: %s)", td.Name(), strings.Join(served, ", "))
			}
		}
	}
	h := sha256.New()
	var certs []*x509.Certificate
	for _, b := range bundles {
		td := b.TrustDomain()
		if len(tds) > 0 && !slices.Contains(tds, td) {
			continue
		}
		auth := b.X509Authorities()
		if len(auth) == 0 {
			return nil, digest, fmt.Errorf("the bundle of %s has no X.509 authorities", td.Name())
		}
		for _, c := range auth {
			if !c.BasicConstraintsValid || !c.IsCA {
				return nil, digest, fmt.Errorf("the bundle of %s: certificate %q (serial %s) is not a CA certificate",
					td.Name(), c.Subject, material.SerialString(c))
			}
		}
		h.Write([]byte(td.Name()))
		h.Write([]byte{0})
		for _, c := range auth {
			h.Write(c.Raw)
		}
		// these authorities vouch for this trust domain's SVIDs only
		material.ScopeAnchors(td.Name(), auth)
		certs = append(certs, auth...)
	}
	if len(certs) == 0 {
		return nil, digest, errors.New("no X.509 authorities")
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	copy(digest[:], h.Sum(nil))
	return &anchors{pool: pool, certs: certs}, digest, nil
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
	if p.Src == nil {
		return nil
	}
	return p.Src.Current().pool
}

// Certificates returns the current authorities; it implements
// caddytls.CertificateProvider, so Caddy's `combined` pool can hold ours.
func (p *Pool) Certificates() []*x509.Certificate {
	if p.Src == nil {
		return nil
	}
	return p.Src.Current().certs
}

// OnChange runs f after each change of the bundles.
func (p *Pool) OnChange(f func()) (cancel func()) { return p.Src.OnChange(f) }

// Cleanup stops following the agent; the last module using the socket
// closes the connection.
func (p *Pool) Cleanup() error {
	if p.unlisten != nil {
		p.unlisten()
	}
	p.Release()
	if p.agent != nil {
		p.agent = nil
		releaseAgent(p.addr)
	}
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
//	}
func (p *Pool) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		return d.Errf("trust pool spiffe_workload: unexpected argument %q (options go in a block)", d.Val())
	}
	return parseAgentBlock(d, "trust pool spiffe_workload", &p.Socket, &p.Wait, func(opt string) (bool, error) {
		if opt != "trust_domains" {
			return false, nil
		}
		args := d.RemainingArgs()
		if len(args) == 0 {
			return true, d.Err("trust pool spiffe_workload: trust_domains takes one or more trust domains")
		}
		for _, s := range args {
			td, err := trustDomain(s)
			if err != nil {
				return true, d.Errf("trust pool spiffe_workload: bad trust domain %q: %v", s, err)
			}
			if slices.Contains(p.TrustDomains, td.Name()) {
				return true, d.Errf("trust pool spiffe_workload: duplicate trust domain %q", s)
			}
			p.TrustDomains = append(p.TrustDomains, td.Name())
		}
		return true, nil
	}, "socket, trust_domains or wait")
}

// Interface guards
var (
	_ caddy.Provisioner            = (*Pool)(nil)
	_ caddy.CleanerUpper           = (*Pool)(nil)
	_ caddyfile.Unmarshaler        = (*Pool)(nil)
	_ caddytls.CA                  = (*Pool)(nil)
	_ caddytls.CertificateProvider = (*Pool)(nil)
)
