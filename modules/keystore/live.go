package keystore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// live is what every source shares: the reloadable certificate. Once
// Provision succeeded KeyPair never returns nil, even after Cleanup: a
// handshake of a config being cleaned up presents the last good identity.
type live struct {
	material.Held[*tls.Certificate]
}

// KeyPair returns the current certificate and key (lock-free); it implements Source.
func (l *live) KeyPair() *tls.Certificate { return l.Src.Current() }

// OnChange runs f after each rotation; it implements Source.
func (l *live) OnChange(f func()) (cancel func()) { return l.Src.OnChange(f) }

// Name is the source's name in logs and metrics; it implements Source.
func (l *live) Name() string { return l.Src.Name() }

func (l *live) acquire(ctx caddy.Context, spec material.Spec[*tls.Certificate]) error {
	spec.Kind = "keystore"
	return l.Acquire(ctx, spec)
}

// expiryWarning is how close to its not-after an identity read from a file
// is reported at load: 7 days, or a third of its lifetime when shorter (a
// 24-hour certificate is not worth a warning on every load).
const expiryWarning = 7 * 24 * time.Hour

// checkKeyPair checks a key pair just read from origin (named in its log
// lines): the usage the consumer needs and not expired (errors), and
// warns when it is not yet valid or expires soon. It returns the
// certificates for the metrics (leaf first).
func checkKeyPair(cert *tls.Certificate, usage Usage, origin string, warnExpiry bool, logger *zap.Logger) ([]*x509.Certificate, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	certs := make([]*x509.Certificate, len(cert.Certificate))
	for i, der := range cert.Certificate {
		if i == 0 && cert.Leaf != nil {
			certs[0] = cert.Leaf
			continue
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	cert.Leaf = certs[0]
	leaf := certs[0]
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate %q (serial %s) expired at %s",
			leaf.Subject, material.SerialString(leaf), material.TimeString(leaf.NotAfter))
	}
	if err := CheckUsage(leaf, usage); err != nil {
		return nil, err
	}
	if now.Before(leaf.NotBefore) {
		logger.Warn("identity is not valid yet; peers will refuse it until then",
			zap.String("source", origin), zap.String("subject", leaf.Subject.String()),
			material.TimeField("not_before", leaf.NotBefore))
	}
	if warnExpiry {
		if left := leaf.NotAfter.Sub(now); left < min(expiryWarning, leaf.NotAfter.Sub(leaf.NotBefore)/3) {
			logger.Warn("identity expires soon; replace the keystore",
				zap.String("source", origin), zap.String("subject", leaf.Subject.String()),
				zap.String("serial", material.SerialString(leaf)),
				material.TimeField("not_after", leaf.NotAfter), zap.Duration("remaining", left.Round(time.Second)))
		}
	}
	for i, c := range certs[1:] {
		if now.After(c.NotAfter) {
			logger.Warn("a certificate of the identity's chain has expired",
				zap.String("source", origin), zap.Int("position", i+1),
				zap.String("subject", c.Subject.String()), material.TimeField("not_after", c.NotAfter))
		}
	}
	return certs, nil
}
