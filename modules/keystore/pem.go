package keystore

import (
	"crypto/tls"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/trustline/trustline/modules/material"
)

func init() {
	caddy.RegisterModule(PEM{})
}

// PEM is an identity from PEM files: a certificate file (the leaf, then its
// intermediates) and a private-key file (PKCS#8, PKCS#1 or SEC 1), watched
// and re-read within 2s of a change; a broken new version (a key that does
// not match, an expired certificate) is refused and logged, and the last
// good identity stays in force.
type PEM struct {
	// Certificate is the path of the PEM certificate file: the leaf, then
	// its chain. Required.
	Certificate string `json:"certificate,omitempty"`
	// Key is the path of the PEM private-key file. Required.
	Key string `json:"key,omitempty"`
	// Usage is the extended key usage the leaf must allow: client_auth,
	// server_auth or any. Set by the directive that uses the keystore
	// (client_identity: client_auth; get_certificate: server_auth).
	// Default: any.
	Usage string `json:"usage,omitempty"`

	live
}

// CaddyModule returns the Caddy module information.
func (PEM) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".pem",
		New: func() caddy.Module { return new(PEM) },
	}
}

// Provision loads the identity (an error fails the config load) and starts
// watching its files.
func (p *PEM) Provision(ctx caddy.Context) error {
	if p.Certificate == "" || p.Key == "" {
		return fmt.Errorf("keystore pem: both a certificate file and a key file are required")
	}
	usage, err := ParseUsage(p.Usage)
	if err != nil {
		return fmt.Errorf("keystore pem: %w", err)
	}
	logger := ctx.Logger()
	origin := "keystore pem " + p.Certificate
	files := []string{p.Certificate, p.Key}
	err = p.acquire(ctx, material.Spec[*tls.Certificate]{
		Name:  p.Certificate,
		Key:   "keystore|pem|" + p.Certificate + "|" + p.Key + "|" + string(usage),
		Watch: files,
		Load: func() (*material.Loaded[*tls.Certificate], error) {
			datas, digest, err := material.ReadFiles(files)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", origin, err)
			}
			cert, err := material.ReadPEMKeyPair(datas[0], datas[1])
			if err != nil {
				return nil, fmt.Errorf("%s (key %s): %w", origin, p.Key, err)
			}
			certs, err := checkKeyPair(cert, usage, origin, true, logger)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", origin, err)
			}
			return &material.Loaded[*tls.Certificate]{Value: cert, Certificates: certs, Digest: digest, Files: files}, nil
		},
	})
	return err // it names the source, the file and the reason
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	... pem <certificate_file> <key_file>
//
//	... pem {
//		certificate <file>
//		key         <file>
//	}
func (p *PEM) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // source name
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
	case 2:
		p.Certificate, p.Key = args[0], args[1]
	default:
		return d.Errf("keystore pem: expected <certificate_file> <key_file>, got %d argument(s)", len(args))
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("keystore pem: duplicate option '%s'", opt)
		}
		seen[opt] = true
		var dst *string
		switch opt {
		case "certificate":
			dst = &p.Certificate
		case "key":
			dst = &p.Key
		default:
			return d.Errf("keystore pem: unknown option '%s' (expected certificate or key)", opt)
		}
		if len(args) > 0 {
			return d.Errf("keystore pem: '%s' given both as an argument and in the block", opt)
		}
		if !d.NextArg() {
			return d.Errf("keystore pem: %s needs a file path", opt)
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.Errf("keystore pem: %s takes one file path", opt)
		}
	}
	if p.Certificate == "" || p.Key == "" {
		return d.Err("keystore pem: both a certificate file and a key file are required")
	}
	return nil
}

// Interface guards
var (
	_ Source                = (*PEM)(nil)
	_ caddy.Provisioner     = (*PEM)(nil)
	_ caddy.CleanerUpper    = (*PEM)(nil)
	_ caddyfile.Unmarshaler = (*PEM)(nil)
)
