package truststore

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// anchors is one version of a trust pool: the pool crypto/tls verifies
// against, and the certificates it holds.
type anchors struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
}

// livePool is the part every trust pool source shares: the reloadable
// anchors and their lifecycle. CertPool returns the current pool, so a
// consumer that asks on every handshake (the live_trust verifier, the
// upstream transport) sees reloads; one that asks once (Caddy's own
// client_auth trust_pool, reverse_proxy tls_trust_pool) sees the pool as it
// was when its config was loaded.
//
// Once Provision succeeded, CertPool and Certificates never return nil,
// even after Cleanup: a handshake of a config being cleaned up (an admin
// reload does not wait for them) gets the last good pool, where a nil one
// would mean the system roots to crypto/x509.
type livePool struct {
	material.Held[*anchors]
}

// CertPool returns the current pool (lock-free); it implements caddytls.CA.
// Nil only when Provision failed.
func (lp *livePool) CertPool() *x509.CertPool {
	if lp.Src == nil {
		return nil
	}
	return lp.Src.Current().pool
}

// Certificates returns the current trust anchors; it implements
// caddytls.CertificateProvider, so Caddy's `combined` pool can hold ours.
func (lp *livePool) Certificates() []*x509.Certificate {
	if lp.Src == nil {
		return nil
	}
	return lp.Src.Current().certs
}

// OnChange runs f after each reload that changed the pool.
func (lp *livePool) OnChange(f func()) (cancel func()) { return lp.Src.OnChange(f) }

// checkAnchors checks trust anchors read from origin (named in the log;
// the caller names it in the error where it must). Every certificate
// must be a CA (a leaf in a truststore is almost always a mistake that
// would trust nothing, or the wrong thing); an expired one is kept but
// logged, since a pool may legitimately carry a CA being retired.
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

// newAnchors builds the pool of checked anchors.
func newAnchors(certs []*x509.Certificate) *anchors {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &anchors{pool: pool, certs: certs}
}

// loadedAnchors wraps anchors for the reloadable value.
func loadedAnchors(a *anchors, digest [32]byte, files []string) *material.Loaded[*anchors] {
	return &material.Loaded[*anchors]{Value: a, Certificates: a.certs, Digest: digest, Files: files}
}

// digestOf identifies a set of certificates (sources that are not files).
func digestOf(certs []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}
