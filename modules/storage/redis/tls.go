package redis

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/tlsclient"
)

// TLS configures TLS to Redis (and to the Sentinels, with sentinel). The
// server's certificate is always verified: against ca_file, or a trust
// pool source module, or else the system's roots.
type TLS struct {
	// CAFile is a PEM file of the CA certificates that Redis's certificate
	// must chain to. Default: the system's roots (unless trust_pool is set).
	CAFile string `json:"ca_file,omitempty"`
	// TrustPoolRaw is any trust pool source (`tls.ca_pool.source.*`: Caddy's
	// inline/file/pki_root, or this suite's truststore, bundle, pki_live),
	// consulted at every new connection, so a rotated pool applies without
	// a restart. Exclusive with ca_file.
	TrustPoolRaw json.RawMessage `json:"trust_pool,omitempty" caddy:"namespace=tls.ca_pool.source inline_key=provider"`
	// ClientIdentityRaw is the client identity to present, from a keystore
	// source of this suite (`trustline.keystore.*`: pem, pkcs12, jks),
	// read at every new connection so a rotated keystore applies without a
	// reload. Exclusive with cert_file/key_file. The internal source cannot
	// be used here: its CA lives in this storage.
	ClientIdentityRaw json.RawMessage `json:"client_identity,omitempty" caddy:"namespace=trustline.keystore inline_key=source"`
	// CertFile is the PEM certificate chain (leaf first) of the client
	// identity to present, with KeyFile. Default: no client certificate.
	CertFile string `json:"cert_file,omitempty"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `json:"key_file,omitempty"`
	// ServerName is the name to verify Redis's certificate against (and to
	// send as SNI). Default: the host of the address dialed, so an IP
	// address must then be an IP SAN of the certificate.
	ServerName string `json:"server_name,omitempty"`

	// client verifies Redis and presents this node's identity, both as
	// current at each handshake
	client *tlsclient.Client
}

// provision loads the trust pool and the client identity.
func (t *TLS) provision(ctx caddy.Context) error {
	switch {
	case t.CAFile != "" && t.TrustPoolRaw != nil:
		return errors.New("tls: ca_file and trust_pool are exclusive")
	case t.ClientIdentityRaw != nil && (t.CertFile != "" || t.KeyFile != ""):
		return errors.New("tls: client_identity and cert_file/key_file are exclusive")
	case (t.CertFile == "") != (t.KeyFile == ""):
		return errors.New("tls: cert_file and key_file go together")
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		data, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("tls: ca_file: %w", err)
		}
		certs, err := material.ParsePEMCertificates(data)
		if err != nil {
			return fmt.Errorf("tls: ca_file %s: %w", t.CAFile, err)
		}
		base.RootCAs = x509.NewCertPool()
		for _, c := range certs {
			base.RootCAs.AddCert(c)
		}
	}
	var head struct {
		Source string `json:"source"`
	}
	if json.Unmarshal(t.ClientIdentityRaw, &head) == nil && head.Source == "internal" {
		return errors.New("tls: client_identity internal cannot be used for the storage: its CA is kept in this storage; use pem, pkcs12 or jks")
	}
	if t.CertFile != "" {
		certPEM, err := os.ReadFile(t.CertFile)
		if err != nil {
			return fmt.Errorf("tls: cert_file: %w", err)
		}
		keyPEM, err := os.ReadFile(t.KeyFile)
		if err != nil {
			return fmt.Errorf("tls: key_file: %w", err)
		}
		id, err := material.ReadPEMKeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("tls: client identity cert_file %s, key_file %s: %w", t.CertFile, t.KeyFile, err)
		}
		base.Certificates = []tls.Certificate{*id}
	}
	// the trust pool and the client identity, loaded as the mtls
	// transport and the passthrough handler load theirs
	client, err := tlsclient.Load(ctx, &reverseproxy.TLSConfig{CARaw: t.TrustPoolRaw}, &tlsclient.Settings{ClientIdentityRaw: t.ClientIdentityRaw})
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	client.Apply(base)
	t.client = client
	return nil
}
