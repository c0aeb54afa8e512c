package truststore

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

// livePool is what every trust pool source shares: the reloadable anchors.
// A consumer that asks on every handshake (live_trust, the upstream
// transport) sees reloads; one that asks once (Caddy's client_auth
// trust_pool) sees the pool of its config load. Once Provision succeeded
// its pool is never nil, even after Cleanup (a nil pool would mean the
// system roots to crypto/x509).
type livePool struct {
	material.Held[*verify.Anchors]
}

// CertPool returns the current pool (lock-free); it implements caddytls.CA.
// Nil only when Provision failed.
func (lp *livePool) CertPool() *x509.CertPool {
	if lp.Src == nil {
		return nil
	}
	return lp.Src.Current().CertPool()
}

// Certificates returns the current trust anchors; it implements
// caddytls.CertificateProvider, so Caddy's `combined` pool can hold ours.
func (lp *livePool) Certificates() []*x509.Certificate {
	if lp.Src == nil {
		return nil
	}
	return lp.Src.Current().Certificates()
}

// CurrentAnchors returns the current version (lock-free), with its
// trust-domain scope; it implements verify.AnchorSource. Nil only when
// Provision failed.
func (lp *livePool) CurrentAnchors() *verify.Anchors {
	if lp.Src == nil {
		return nil
	}
	return lp.Src.Current()
}

// Version is the current version, as a value that changes at each reload.
func (lp *livePool) Version() any { return lp.Src.CurrentLoaded() }

// OnChange runs f after each reload that changed the pool.
func (lp *livePool) OnChange(f func()) (cancel func()) { return lp.Src.OnChange(f) }

// checkAnchors checks trust anchors read from origin (named in the log):
// every one must be a CA (a leaf in a truststore is a mistake); an expired
// one is kept but logged (a pool may carry a CA being retired).
func checkAnchors(certs []*x509.Certificate, logger *zap.Logger, origin string) error {
	now := time.Now()
	for _, c := range certs {
		if !c.BasicConstraintsValid || !c.IsCA {
			return fmt.Errorf("certificate %q (serial %s) is not a CA certificate", c.Subject, material.SerialString(c))
		}
		if now.After(c.NotAfter) {
			logger.Warn("trust anchor has expired", zap.String("file", origin),
				zap.String("subject", c.Subject.String()), zap.String("serial", material.SerialString(c)), material.TimeField("not_after", c.NotAfter))
		}
	}
	return nil
}

// loadedAnchors wraps anchors for the reloadable value.
func loadedAnchors(a *verify.Anchors, digest [32]byte, files []string) *material.Loaded[*verify.Anchors] {
	return &material.Loaded[*verify.Anchors]{Value: a, Certificates: a.Certificates(), Digest: digest, Files: files}
}

// digestOf identifies a set of certificates (sources that are not files).
func digestOf(certs []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	return [32]byte(h.Sum(nil))
}
