package verify

import (
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Anchors is one immutable version of a trust pool: the certificates it
// trusts, the *x509.CertPool crypto/tls takes, and for SPIFFE bundles each
// trust domain's authorities, which vouch for that domain only (as
// go-spiffe's x509svid.Verify does). No version's content changes how
// another verifies: two pools holding one CA hold two objects.
type Anchors struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
	// domains is nil for plain CAs (a PEM bundle, a truststore, a pki CA).
	domains map[spiffeid.TrustDomain]*domain
}

// domain is one trust domain's authorities in a SPIFFE version.
type domain struct {
	bundle *x509bundle.Bundle
	pool   *x509.CertPool
}

// NewAnchors is a version of plain CAs: each vouches for any leaf it
// issues, as the operator who trusts it chose.
func NewAnchors(certs []*x509.Certificate) *Anchors {
	return &Anchors{pool: poolOf(certs), certs: certs}
}

// NewAnchorsWithSystemRoots is NewAnchors plus the system roots (read
// now). Only certs are listed by Certificates.
func NewAnchorsWithSystemRoots(certs []*x509.Certificate) (*Anchors, error) {
	sys, err := x509.SystemCertPool()
	if err != nil {
		return nil, fmt.Errorf("system roots: %w", err)
	}
	for _, c := range certs {
		sys.AddCert(c)
	}
	return &Anchors{pool: sys, certs: certs}, nil
}

// PoolAnchors is a plain version over a pool the suite does not keep
// (another module's trust pool): it lists no certificates.
func PoolAnchors(pool *x509.CertPool) *Anchors { return &Anchors{pool: pool} }

// Domain is the X.509 authorities of one SPIFFE trust domain's bundle, and
// where they were read from (for errors).
type Domain struct {
	TrustDomain spiffeid.TrustDomain
	Authorities []*x509.Certificate
	Origin      string
}

// NewSPIFFEAnchors is a version of SPIFFE bundles: each authority vouches
// only for the X509-SVIDs of its own trust domain. An authority listed by
// two trust domains is refused, naming both: crypto/x509 would keep only
// one of them, and which domain it stood for would depend on the order.
func NewSPIFFEAnchors(domains []Domain) (*Anchors, error) {
	a := &Anchors{domains: make(map[spiffeid.TrustDomain]*domain, len(domains))}
	first := map[string]Domain{} // authority DER -> the domain that listed it first
	for _, d := range domains {
		if _, dup := a.domains[d.TrustDomain]; dup {
			return nil, fmt.Errorf("trust domain %s is listed twice", d.TrustDomain.Name())
		}
		if len(d.Authorities) == 0 {
			return nil, fmt.Errorf("the bundle of %s has no X.509 authorities", d.TrustDomain.Name())
		}
		for _, c := range d.Authorities {
			if prev, ok := first[string(c.Raw)]; ok && prev.TrustDomain != d.TrustDomain {
				return nil, fmt.Errorf("authority %s is listed by trust domain %s (%s) and by trust domain %s (%s): an authority vouches for one trust domain only; remove it from one of the bundles",
					certName(c), prev.TrustDomain.Name(), prev.Origin, d.TrustDomain.Name(), d.Origin)
			}
			first[string(c.Raw)] = d
		}
		a.domains[d.TrustDomain] = &domain{
			bundle: x509bundle.FromX509Authorities(d.TrustDomain, d.Authorities),
			pool:   poolOf(d.Authorities),
		}
		a.certs = append(a.certs, d.Authorities...)
	}
	if len(a.certs) == 0 {
		return nil, errors.New("no X.509 authorities")
	}
	a.pool = poolOf(a.certs)
	for td, d := range a.domains {
		for _, c := range d.bundle.X509Authorities() {
			registerAuthority(c, td)
		}
	}
	return a, nil
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// CertPool is the pool crypto/tls verifies against.
func (a *Anchors) CertPool() *x509.CertPool { return a.pool }

// Certificates are the trusted certificates (without the system roots).
func (a *Anchors) Certificates() []*x509.Certificate { return a.certs }

// SPIFFE reports whether the version was read from SPIFFE bundles.
func (a *Anchors) SPIFFE() bool { return a.domains != nil }

// TrustDomains lists the trust domains of a SPIFFE version, sorted.
func (a *Anchors) TrustDomains() []string {
	var out []string
	for td := range a.domains {
		out = append(out, td.Name())
	}
	slices.Sort(out)
	return out
}

// GetX509BundleForTrustDomain implements go-spiffe's x509bundle.Source.
func (a *Anchors) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if d, ok := a.domains[td]; ok {
		return d.bundle, nil
	}
	return nil, fmt.Errorf("no X.509 bundle for trust domain %q", td)
}

var _ x509bundle.Source = (*Anchors)(nil)

// Verify verifies leaf, with the intermediates the peer sent, against
// this version for usage at now, and returns the chain (leaf first,
// anchor last) and its anchor's trust domain ("" for a plain CA). In a
// SPIFFE version the leaf must be an X509-SVID verified against its own
// domain's authorities; a plain version's chain is still scoped (Scope),
// as the pool may hold SPIFFE authorities (Caddy's `combined`). An error
// is a *Refusal.
func (a *Anchors) Verify(leaf *x509.Certificate, intermediates []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) ([]*x509.Certificate, string, error) {
	opts := x509.VerifyOptions{
		Roots:       a.pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
	}
	if len(intermediates) > 0 {
		opts.Intermediates = poolOf(intermediates)
	}
	if a.domains == nil {
		chains, err := leaf.Verify(opts)
		if err != nil {
			return nil, "", refuse(ReasonOf(err), err)
		}
		return Scope(chains, usage)
	}
	id, err := SVID(leaf, usage)
	if err != nil {
		return nil, "", a.outsideScope(leaf, opts, fmt.Errorf("the pool holds SPIFFE bundles, whose authorities vouch only for X509-SVIDs, and the leaf is no X509-SVID (%w)", err))
	}
	d, ok := a.domains[id.TrustDomain()]
	if !ok {
		return nil, "", a.outsideScope(leaf, opts, fmt.Errorf("the leaf's SPIFFE ID %s is of trust domain %s, which has no bundle in the pool (it holds: %s)",
			id, id.TrustDomain().Name(), strings.Join(a.TrustDomains(), ", ")))
	}
	opts.Roots = d.pool
	chains, err := leaf.Verify(opts)
	if err != nil {
		return nil, "", a.outsideScope(leaf, opts, err)
	}
	return chains[0], id.TrustDomain().Name(), nil
}

// outsideScope is the refusal of a leaf that a SPIFFE version does not
// vouch for: when the chain leads to another trust domain's authority it
// says so (a partner minting one of our IDs), else err as it is.
func (a *Anchors) outsideScope(leaf *x509.Certificate, opts x509.VerifyOptions, err error) error {
	opts.Roots = a.pool
	if chains, verr := leaf.Verify(opts); verr == nil {
		anchor := chains[0][len(chains[0])-1]
		if td, ok := authorityDomain(anchor); ok {
			return refuse(ReasonTrustDomain, &ScopeError{AnchorDomain: td, Reason: scopeReason(leaf, td, err)})
		}
	}
	if reason := ReasonOf(err); reason != "" {
		return refuse(reason, err)
	}
	return refuse(ReasonTrustDomain, err)
}

// The authorities of SPIFFE versions, weakly by object (never content: a
// CA a partner's bundle also lists stays plain in every other pool): how
// a chain crypto/tls verified against a flat pool finds its anchor's
// trust domain.
var authorities sync.Map // weak.Pointer[x509.Certificate] -> spiffeid.TrustDomain

// conflicting marks an object registered for two trust domains (it cannot
// happen: each bundle has its own objects); it vouches for nothing.
var conflicting = spiffeid.TrustDomain{}

func registerAuthority(c *x509.Certificate, td spiffeid.TrustDomain) {
	key := weak.Make(c)
	prev, loaded := authorities.LoadOrStore(key, td)
	if !loaded {
		runtime.AddCleanup(c, func(k weak.Pointer[x509.Certificate]) { authorities.Delete(k) }, key)
		return
	}
	if prev.(spiffeid.TrustDomain) != td {
		authorities.Store(key, conflicting)
	}
}

// authorityDomain is the trust domain of anchor when it is the authority
// of a SPIFFE version.
func authorityDomain(anchor *x509.Certificate) (spiffeid.TrustDomain, bool) {
	v, ok := authorities.Load(weak.Make(anchor))
	if !ok {
		return spiffeid.TrustDomain{}, false
	}
	return v.(spiffeid.TrustDomain), true
}

// AnchorSource is a trust pool source of the suite that keeps versions of
// Anchors; verifiers ask it for the current one at each handshake.
type AnchorSource interface {
	// CurrentAnchors is the current version; lock-free.
	CurrentAnchors() *Anchors
	// Version is a value that changes at each new version (for re-checks).
	Version() any
	// OnChange runs f after each new version; cancel stops it.
	OnChange(f func()) (cancel func())
}
