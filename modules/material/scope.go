package material

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Trust-domain scope of trust anchors.
//
// A SPIFFE trust bundle's X.509 authorities vouch for the SVIDs of their
// own trust domain only: a federated partner's CA must not be able to
// issue spiffe://example.org/admin. Trust pools are flat *x509.CertPool
// values (that is what crypto/tls and Caddy take), so the pool sources
// that read SPIFFE bundles declare here which trust domain each of their
// authorities belongs to (ScopeAnchors), and every place that turns a
// verified chain into an identity or a decision applies the same rule
// (ScopeChains): a chain whose anchor is a SPIFFE authority stands only
// for an X509-SVID of that anchor's trust domain; a chain whose anchor is
// a plain CA (a PEM bundle, a truststore, Caddy's pki CA) stands for any
// leaf, as the operator who trusts that CA chose.
//
// The declaration is looked up first by the anchor object itself (a weak
// pointer: exact for the version of the bundle that holds it, forgotten
// when that version is collected), then by the anchor's content (the
// union of every trust domain the same certificate was ever declared for
// in this process, for chains rebuilt from a session ticket, whose anchor
// is a fresh parse). A certificate that any SPIFFE bundle held is never
// taken as a plain CA again, so the content rule only ever adds scope.

var (
	scopeByCert    sync.Map // weak.Pointer[x509.Certificate] -> []string
	scopeByContent = struct {
		sync.RWMutex
		m map[[32]byte][]string
	}{m: map[[32]byte][]string{}}
	scopedContents atomic.Int64
)

// ScopeAnchors declares certs (one version of a SPIFFE bundle's X.509
// authorities) as authorities of trustDomain only.
func ScopeAnchors(trustDomain string, certs []*x509.Certificate) {
	for _, c := range certs {
		key := weak.Make(c)
		if prev, loaded := scopeByCert.Load(key); loaded {
			tds := prev.([]string)
			if !slices.Contains(tds, trustDomain) {
				scopeByCert.Store(key, append(slices.Clone(tds), trustDomain))
			}
		} else {
			scopeByCert.Store(key, []string{trustDomain})
			runtime.AddCleanup(c, func(k weak.Pointer[x509.Certificate]) { scopeByCert.Delete(k) }, key)
		}
		sum := sha256.Sum256(c.Raw)
		scopeByContent.Lock()
		tds, ok := scopeByContent.m[sum]
		if !ok {
			scopedContents.Add(1)
		}
		if !slices.Contains(tds, trustDomain) {
			scopeByContent.m[sum] = append(slices.Clone(tds), trustDomain)
		}
		scopeByContent.Unlock()
	}
}

// AnchorTrustDomains returns the SPIFFE trust domains whose bundles hold
// anchor, or nil when anchor is a plain CA.
func AnchorTrustDomains(anchor *x509.Certificate) []string {
	if v, ok := scopeByCert.Load(weak.Make(anchor)); ok {
		return v.([]string)
	}
	if scopedContents.Load() == 0 {
		return nil
	}
	sum := sha256.Sum256(anchor.Raw)
	scopeByContent.RLock()
	defer scopeByContent.RUnlock()
	return scopeByContent.m[sum]
}

// ScopeError is why no verified chain may vouch for its leaf.
type ScopeError struct {
	// SPIFFEID is the leaf's SPIFFE ID, if it has a well-formed one.
	SPIFFEID string
	// AnchorDomains are the trust domains of the first chain's anchor.
	AnchorDomains []string
	// Reason says what is wrong with the leaf.
	Reason string
}

func (e *ScopeError) Error() string {
	return fmt.Sprintf("the chain leads to a SPIFFE authority of trust domain %s, %s",
		strings.Join(e.AnchorDomains, ", "), e.Reason)
}

// ScopeChains picks, among verified chains (each the leaf first and its
// trust anchor last, as x509.Certificate.Verify returns them), the first
// whose anchor may vouch for the leaf, and returns it with the trust
// domain of its anchor ("" for a plain CA). An anchor of a SPIFFE bundle
// vouches only for an X509-SVID (exactly one URI SAN holding a SPIFFE ID
// with a path; not a CA; no keyCertSign or cRLSign key usage) whose ID is
// in the anchor's own trust domain.
func ScopeChains(chains [][]*x509.Certificate) ([]*x509.Certificate, string, error) {
	var first *ScopeError
	for _, chain := range chains {
		if len(chain) == 0 {
			continue
		}
		tds := AnchorTrustDomains(chain[len(chain)-1])
		if tds == nil {
			return chain, "", nil
		}
		td, err := svidDomain(chain[0], tds)
		if err == nil {
			return chain, td, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return nil, "", errors.New("no verified chain")
	}
	return nil, "", first
}

func svidDomain(leaf *x509.Certificate, tds []string) (string, *ScopeError) {
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return "", &ScopeError{AnchorDomains: tds, Reason: "but the leaf is not an X509-SVID: " + err.Error()}
	}
	serr := &ScopeError{SPIFFEID: id.String(), AnchorDomains: tds}
	switch td := id.TrustDomain().Name(); {
	case id.Path() == "":
		serr.Reason = "but the leaf's SPIFFE ID " + id.String() + " has no path"
	case leaf.IsCA:
		serr.Reason = "but the leaf is a CA"
	case leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		serr.Reason = "but the leaf has the keyCertSign or cRLSign key usage"
	case !slices.Contains(tds, td):
		serr.Reason = "but the leaf's SPIFFE ID " + id.String() + " is of trust domain " + td + ": an authority vouches only for its own trust domain"
	default:
		return td, nil
	}
	return "", serr
}
