package truststore

import (
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/trustline/trustline/internal/misplaced"
	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

func init() {
	caddy.RegisterModule(TrustStore{})
}

// TrustStore is a trust pool from a Java-style truststore: JKS, or PKCS#12
// (modern or legacy encryption), detected from the content. The file is
// watched and re-read within 2s of a change; a broken new version is
// refused (logged) and the last good pool stays in force.
type TrustStore struct {
	// Path of the truststore file. Required.
	Path string `json:"path,omitempty"`
	// Password of the store: literal, or a placeholder such as
	// `{env.TRUSTSTORE_PASSWORD}` or `{file./run/secrets/ts-pass}`.
	// Required for JKS (it checks the store's integrity); empty by default.
	// Never logged.
	Password string `json:"password,omitempty"`
	// Aliases restricts a JKS store to these entries. Default: every
	// trusted-certificate entry.
	Aliases []string `json:"aliases,omitempty"`

	livePool
}

// CaddyModule returns the Caddy module information.
func (TrustStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.ca_pool.source.truststore",
		New: func() caddy.Module { return new(TrustStore) },
	}
}

// Provision loads the store (an error fails the config load) and starts
// watching it.
func (ts *TrustStore) Provision(ctx caddy.Context) error {
	if ts.Path == "" {
		return fmt.Errorf("truststore: a path is required")
	}
	password, err := material.ResolveSecret("password", ts.Password)
	if err != nil {
		return fmt.Errorf("loading truststore %q: %w", ts.Path, err)
	}
	logger := ctx.Logger()
	opts := material.StoreOptions{Password: password, Aliases: ts.Aliases}
	err = ts.Acquire(ctx, material.Spec[*verify.Anchors]{
		Kind:  "truststore",
		Name:  ts.Path,
		Key:   "truststore|" + ts.Path + "|" + material.HashSecret(password) + "|" + strings.Join(ts.Aliases, ","),
		Watch: []string{ts.Path},
		// errors: the reason only (Provision and the reload log name the file)
		Load: func() (*material.Loaded[*verify.Anchors], error) {
			datas, digest, err := material.ReadFiles([]string{ts.Path})
			if err != nil {
				return nil, material.StoreFileError(err)
			}
			certs, err := material.ReadTrustAnchors(datas[0], opts)
			if err != nil {
				return nil, err
			}
			if err := checkAnchors(certs, logger, ts.Path); err != nil {
				return nil, err
			}
			return loadedAnchors(verify.NewAnchors(certs), digest, nil), nil
		},
	})
	if err != nil {
		return fmt.Errorf("loading truststore %q: %w", ts.Path, err)
	}
	return nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	trust_pool truststore <path> {
//		password <password|{env.VAR}|{file./path}>
//		alias    <alias...>
//	}
func (ts *TrustStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if !d.NextArg() {
		return d.Err("truststore: expected the path of a JKS or PKCS#12 file")
	}
	ts.Path = d.Val()
	if d.NextArg() {
		return d.Errf("truststore: unexpected argument %q (options go in a block)", d.Val())
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("truststore: duplicate option '%s'", opt)
		}
		seen[opt] = true
		switch opt {
		case "password":
			if !d.NextArg() {
				return d.Err("truststore: password needs a value")
			}
			ts.Password = d.Val()
			if d.NextArg() {
				return d.Err("truststore: password takes one value")
			}
		case "alias":
			ts.Aliases = d.RemainingArgs()
			if len(ts.Aliases) == 0 {
				return d.Err("truststore: alias needs at least one name")
			}
		default:
			return d.Errf("truststore: unknown option '%s' (expected password or alias)%s", opt, misplaced.Hint(opt))
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner            = (*TrustStore)(nil)
	_ caddy.CleanerUpper           = (*TrustStore)(nil)
	_ caddyfile.Unmarshaler        = (*TrustStore)(nil)
	_ caddytls.CA                  = (*TrustStore)(nil)
	_ caddytls.CertificateProvider = (*TrustStore)(nil)
)
