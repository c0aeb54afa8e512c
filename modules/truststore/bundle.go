package truststore

import (
	"crypto/x509"
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
	caddy.RegisterModule(Bundle{})
}

// Bundle is a trust pool from PEM files: single files, directories (every
// .pem, .crt and .cer file) and glob patterns, optionally with the system
// roots. They are watched (new files, renames, `..data` symlink swaps
// included) and re-read within 2s; a broken new version is refused
// (logged) and the last good pool stays.
type Bundle struct {
	// Files, directories and glob patterns of PEM certificates. Required.
	// A pattern that matches nothing, or a directory with no certificate,
	// is an error.
	Paths []string `json:"paths,omitempty"`
	// SystemRoots adds the operating system's roots to the pool. They are
	// read once, when the source is loaded. Default: false.
	SystemRoots bool `json:"system_roots,omitempty"`

	livePool
}

// CaddyModule returns the Caddy module information.
func (Bundle) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.ca_pool.source.bundle",
		New: func() caddy.Module { return new(Bundle) },
	}
}

// Provision loads the bundle and starts watching it.
func (b *Bundle) Provision(ctx caddy.Context) error {
	if len(b.Paths) == 0 {
		return fmt.Errorf("bundle: at least one file, directory or pattern is required")
	}
	logger := ctx.Logger()
	name := strings.Join(b.Paths, " ")
	err := b.Acquire(ctx, material.Spec[*verify.Anchors]{
		Kind:  "bundle",
		Name:  name,
		Key:   fmt.Sprintf("bundle|%q|%v", b.Paths, b.SystemRoots),
		Watch: watchable(b.Paths),
		Load: func() (*material.Loaded[*verify.Anchors], error) {
			// errors: the file and the reason (Provision and the reload log name the bundle)
			files, err := material.ExpandPaths(b.Paths)
			if err != nil {
				return nil, err
			}
			datas, digest, err := material.ReadFiles(files)
			if err != nil {
				return nil, err
			}
			var certs []*x509.Certificate
			for i, data := range datas {
				c, err := material.ParsePEMCertificates(data)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", files[i], notPEMStore(data, files[i], err))
				}
				if err := checkAnchors(c, logger, files[i]); err != nil {
					return nil, fmt.Errorf("%s: %w", files[i], err)
				}
				certs = append(certs, c...)
			}
			a := verify.NewAnchors(certs)
			if b.SystemRoots {
				if a, err = verify.NewAnchorsWithSystemRoots(certs); err != nil {
					return nil, err
				}
			}
			return loadedAnchors(a, digest, files), nil
		},
	})
	if err != nil {
		return fmt.Errorf("loading bundle %q: %w", name, err)
	}
	return nil
}

// notPEMStore says which source reads a JKS or PKCS#12 store given to
// bundle; other errors are returned as they are.
func notPEMStore(data []byte, file string, err error) error {
	kind := ""
	switch f, _ := material.DetectFormat(data); f {
	case material.FormatJKS:
		kind = "a JKS store"
	case material.FormatPKCS12:
		kind = "a PKCS#12 store"
	default:
		return err
	}
	return fmt.Errorf("%s (a keystore or truststore), not PEM: bundle reads PEM certificates; for a truststore use `truststore %s { password ... }`", kind, file)
}

// watchable turns glob patterns into the directories that hold them.
func watchable(paths []string) []string {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if i := strings.IndexAny(p, "*?["); i >= 0 {
			if j := strings.LastIndex(p[:i], "/"); j >= 0 {
				p = p[:j+1]
			} else {
				p = "."
			}
		}
		out = append(out, p)
	}
	return out
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	trust_pool bundle <file|dir|glob...> {
//		path <file|dir|glob...>
//		system_roots
//	}
func (b *Bundle) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	b.Paths = append(b.Paths, d.RemainingArgs()...)
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "path":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Err("bundle: path needs at least one file, directory or pattern")
			}
			b.Paths = append(b.Paths, args...)
		case "system_roots":
			if seen[opt] {
				return d.Errf("bundle: duplicate option '%s'", opt)
			}
			if d.NextArg() {
				return d.Errf("bundle: system_roots takes no argument, got %q", d.Val())
			}
			b.SystemRoots = true
		default:
			return d.Errf("bundle: unknown option '%s' (expected path or system_roots)%s", opt, misplaced.Hint(opt))
		}
		seen[opt] = true
	}
	if len(b.Paths) == 0 {
		return d.Err("bundle: expected at least one file, directory or pattern")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner            = (*Bundle)(nil)
	_ caddy.CleanerUpper           = (*Bundle)(nil)
	_ caddyfile.Unmarshaler        = (*Bundle)(nil)
	_ caddytls.CA                  = (*Bundle)(nil)
	_ caddytls.CertificateProvider = (*Bundle)(nil)
)
