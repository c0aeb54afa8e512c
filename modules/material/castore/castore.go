// Package castore reads a CA of Caddy's `pki` app as Caddy's storage holds
// it (pki/authorities/<id>/, a layout caddyinternals pins), so that every
// node sharing the storage issues from, and trusts, the same root and
// current intermediate, whichever node renewed it: Caddy loads a CA into
// memory only when its config loads.
package castore

import (
	"cmp"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/modules/material"
)

// CA is a CA as storage holds it.
type CA struct {
	// ID is the CA's ID in the pki app.
	ID string
	// Root is the root certificate: root.crt, or the fallback given to
	// Load when storage has none (a root configured from files).
	Root *x509.Certificate
	// Intermediates is intermediate.crt: the issuing certificate first.
	Intermediates []*x509.Certificate
	// Key is the issuing intermediate's private key (intermediate.key),
	// read only when asked for.
	Key crypto.Signer
	// Digest identifies the root and intermediate certificates read.
	Digest [32]byte
}

// Issuer is the certificate that signs leaves: Intermediates[0].
func (ca *CA) Issuer() *x509.Certificate { return ca.Intermediates[0] }

// Retries of a pair caught mid-replacement: Caddy and trustline_cluster
// store the new intermediate's certificate and key one after the other.
const (
	readAttempts = 4
	readRetry    = 75 * time.Millisecond
)

// Load reads the CA called id from st: its root (root.crt, else
// fallbackRoot when not nil), its intermediate chain, and with withKey the
// intermediate's key. An intermediate not signed by the root, or a key
// that does not match it, is read again a few times (a renewal in
// progress), then refused. An error that wraps fs.ErrNotExist means
// storage does not hold the CA.
func Load(ctx context.Context, st certmagic.Storage, id string, fallbackRoot *x509.Certificate, withKey bool) (*CA, error) {
	var err error
	for attempt := 1; ; attempt++ {
		var ca *CA
		ca, err = load(ctx, st, id, fallbackRoot, withKey)
		if err == nil {
			return ca, nil
		}
		if !errors.Is(err, ErrInconsistent) || attempt == readAttempts {
			return nil, err
		}
		t := time.NewTimer(readRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// ErrInconsistent is wrapped by the error of a stored intermediate that is
// not signed by the root or does not match its key.
var ErrInconsistent = errors.New("inconsistent CA in storage")

// ErrRolledBack is wrapped by the error of a read that the storage refused
// as an older value written back (`storage redis` with encryption), told by
// the storage error's method `RolledBack() bool`.
var ErrRolledBack = errors.New("older value written back in storage")

// loadKey reads one of the CA's files, marking a storage's rollback
// refusal with ErrRolledBack.
func loadKey(ctx context.Context, st certmagic.Storage, key string) ([]byte, error) {
	b, err := st.Load(ctx, key)
	var rb interface{ RolledBack() bool }
	if err != nil && errors.As(err, &rb) && rb.RolledBack() {
		return nil, fmt.Errorf("%w (%w)", err, ErrRolledBack)
	}
	return b, err
}

// Older reports whether intermediate a was made before b: an earlier
// not-before, or the same one and a smaller serial (a total order, so
// every node ranks two intermediates alike).
func Older(a, b *x509.Certificate) bool {
	return cmp.Or(a.NotBefore.Compare(b.NotBefore), a.SerialNumber.Cmp(b.SerialNumber)) < 0
}

func load(ctx context.Context, st certmagic.Storage, id string, fallbackRoot *x509.Certificate, withKey bool) (*CA, error) {
	ca := &CA{ID: id}
	rootCrt, interCrt, interKey := caddyinternals.PKIKey(id, caddyinternals.PKIRootCert),
		caddyinternals.PKIKey(id, caddyinternals.PKIIntermediateCert), caddyinternals.PKIKey(id, caddyinternals.PKIIntermediateKey)
	rootPEM, err := loadKey(ctx, st, rootCrt)
	switch {
	case errors.Is(err, fs.ErrNotExist) && fallbackRoot != nil:
		ca.Root = fallbackRoot
	case err != nil:
		return nil, fmt.Errorf("ca %q: reading %s: %w", id, rootCrt, err)
	default:
		roots, err := material.ParsePEMCertificates(rootPEM)
		if err != nil {
			return nil, fmt.Errorf("ca %q: %s: %w", id, rootCrt, err)
		}
		ca.Root = roots[0]
	}
	interPEM, err := loadKey(ctx, st, interCrt)
	if err != nil {
		return nil, fmt.Errorf("ca %q: reading %s: %w", id, interCrt, err)
	}
	ca.Intermediates, err = material.ParsePEMCertificates(interPEM)
	if err != nil {
		return nil, fmt.Errorf("ca %q: %s: %w", id, interCrt, err)
	}
	if err := ca.Intermediates[len(ca.Intermediates)-1].CheckSignatureFrom(ca.Root); err != nil {
		return nil, fmt.Errorf("ca %q: the stored intermediate (serial %s) is not signed by the root %q: %w (%w)",
			id, material.SerialString(ca.Issuer()), ca.Root.Subject.String(), err, ErrInconsistent)
	}
	if withKey {
		keyPEM, err := loadKey(ctx, st, interKey)
		if err != nil {
			return nil, fmt.Errorf("ca %q: reading %s: %w", id, interKey, err)
		}
		signer, err := material.ParsePEMPrivateKey(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("ca %q: decoding %s: %w", id, interKey, err)
		}
		if !KeyMatches(ca.Issuer(), signer) {
			return nil, fmt.Errorf("ca %q: %s does not match the certificate in %s (%w)",
				id, interKey, interCrt, ErrInconsistent)
		}
		ca.Key = signer
	}
	h := sha256.New()
	for _, c := range append([]*x509.Certificate{ca.Root}, ca.Intermediates...) {
		h.Write(c.Raw)
	}
	ca.Digest = [32]byte(h.Sum(nil))
	return ca, nil
}

// KeyMatches reports whether key is the private key of cert.
func KeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && key != nil && pub.Equal(key.Public())
}

// KeyWatcher is what a storage that announces changes implements (`storage
// redis`, through pub/sub): WatchKeys calls f with each key stored or
// deleted under prefix by any node, and with prefix itself when
// notifications may have been missed; f must not block.
type KeyWatcher interface {
	WatchKeys(prefix string, f func(key string)) (cancel func())
}

// Watch calls f (which must not block) when the CA called id may have
// changed in st, if st announces changes; ok is false when it does not
// (readers then rely on polling).
func Watch(st certmagic.Storage, id string, f func()) (cancel func(), ok bool) {
	w, ok := st.(KeyWatcher)
	if !ok {
		return func() {}, false
	}
	return w.WatchKeys(caddyinternals.PKIPrefix(id), func(string) { f() }), true
}
