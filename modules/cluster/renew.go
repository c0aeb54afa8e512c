package cluster

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"

	"github.com/trustline/trustline/internal/caddyinternals"
)

// newIntermediate makes an intermediate as Caddy's pki app does (same
// template, key type, common name and lifetime), signed by the root, that
// ranks after after (castore.Older) when after is not nil: in the same
// second as after, its serial is made larger, so that no node takes a
// renewal for a rollback.
func (s *caState) newIntermediate(root *x509.Certificate, rootKey crypto.Signer, after *x509.Certificate) (*x509.Certificate, crypto.Signer, error) {
	lifetime := time.Duration(s.ca.IntermediateLifetime) // Caddy's provisioning set its default
	if left := time.Until(root.NotAfter); lifetime >= left {
		return nil, nil, fmt.Errorf("intermediate_lifetime %s would outlive the root (it expires in %s)", lifetime, left.Round(time.Second))
	}
	repl := caddy.NewReplacer()
	repl.Set("pki.ca.name", s.ca.Name)
	cn := repl.ReplaceAll(s.ca.IntermediateCommonName, "")
	signer, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, nil, fmt.Errorf("generating the intermediate key: %w", err)
	}
	csr, err := x509util.CreateCertificateRequest(cn, []string{}, signer)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := x509util.NewCertificate(csr, x509util.WithTemplate(x509util.DefaultIntermediateTemplate, x509util.CreateTemplateData(cn, []string{})))
	if err != nil {
		return nil, nil, err
	}
	c := tmpl.GetCertificate()
	c.NotBefore = time.Now().Truncate(time.Second)
	c.NotAfter = c.NotBefore.Add(lifetime)
	if after != nil && c.NotBefore.Equal(after.NotBefore) {
		step, err := rand.Int(rand.Reader, big.NewInt(1<<62))
		if err != nil {
			return nil, nil, err
		}
		serial := new(big.Int).Add(after.SerialNumber, step.Add(step, big.NewInt(1)))
		if serial.BitLen() > 159 { // at most 20 octets: a second later instead
			c.NotBefore = c.NotBefore.Add(time.Second)
			c.NotAfter = c.NotAfter.Add(time.Second)
		} else {
			c.SerialNumber = serial
		}
	}
	cert, err := x509util.CreateCertificate(c, root, signer.Public(), rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the intermediate with the root: %w", err)
	}
	return cert, signer, nil
}

// store writes the new intermediate where Caddy keeps it: the certificate,
// then the key (readers retry a pair caught in between).
func (s *caState) store(ctx context.Context, cert *x509.Certificate, key crypto.Signer) error {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	keyPEM, err := certmagic.PEMEncodePrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the intermediate key: %w", err)
	}
	if err := s.storage.Store(ctx, caddyinternals.PKIKey(s.id, caddyinternals.PKIIntermediateCert), certPEM); err != nil {
		return fmt.Errorf("storing the new intermediate: %w", err)
	}
	if err := s.storage.Store(ctx, caddyinternals.PKIKey(s.id, caddyinternals.PKIIntermediateKey), keyPEM); err != nil {
		return fmt.Errorf("storing the new intermediate's key (the stored certificate has no matching key until the next renewal): %w", err)
	}
	return nil
}
