package keystore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
)

func init() {
	caddy.RegisterModule(CertGetter{})
}

// CertGetter serves a site's certificate from a keystore: Caddy's TLS
// automation asks it on each handshake, and it answers with the keystore's
// current identity, so a rotation serves from the next handshake on. The
// leaf must allow the serverAuth usage (or have no extended key usage).
type CertGetter struct {
	// Keystore is the keystore source module (pem, pkcs12, jks, internal).
	// Required.
	KeystoreRaw json.RawMessage `json:"keystore,omitempty" caddy:"namespace=trustline.keystore inline_key=source"`

	src Source
}

// CaddyModule returns the Caddy module information.
func (CertGetter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.get_certificate.keystore",
		New: func() caddy.Module { return new(CertGetter) },
	}
}

// Provision loads the keystore source.
func (g *CertGetter) Provision(ctx caddy.Context) error {
	if g.KeystoreRaw == nil {
		return errors.New("get_certificate keystore: a keystore source is required")
	}
	src, err := Load(ctx, g, "KeystoreRaw", UsageServerAuth)
	if err != nil {
		return fmt.Errorf("get_certificate keystore: %w", err)
	}
	g.src = src
	return nil
}

// GetCertificate returns the keystore's current identity; it implements
// certmagic.Manager.
func (g *CertGetter) GetCertificate(_ context.Context, _ *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return g.src.KeyPair(), nil
}

// UnmarshalCaddyfile sets up the getter from Caddyfile tokens.
//
// Syntax (in a site's tls block):
//
//	get_certificate keystore <source> <args...> {
//		...
//	}
//
// for example `get_certificate keystore pkcs12 /etc/site.p12 { password {env.P12_PASS} }`.
func (g *CertGetter) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	raw, err := UnmarshalSource(d, "get_certificate keystore")
	if err != nil {
		return err
	}
	g.KeystoreRaw = raw
	return nil
}

// Interface guards
var (
	_ certmagic.Manager     = (*CertGetter)(nil)
	_ caddy.Provisioner     = (*CertGetter)(nil)
	_ caddyfile.Unmarshaler = (*CertGetter)(nil)
)
