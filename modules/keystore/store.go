package keystore

import (
	"crypto/tls"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/trustline/trustline/modules/material"
)

func init() {
	caddy.RegisterModule(PKCS12{})
	caddy.RegisterModule(JKS{})
}

// PKCS12 is an identity from a PKCS#12 keystore (.p12, .pfx): its private
// key, its certificate and the chain stored with it, in the modern
// (PBES2/AES-256, SHA-256 MAC) or legacy (RC2/3DES, SHA-1 MAC) encryption.
// The format is detected from the content, so a JKS file named .p12 loads
// too. The file is watched and re-read within 2s of a change; a broken new
// version is refused (logged) and the last good identity stays in force.
type PKCS12 struct {
	// Path of the keystore file. Required.
	Path string `json:"path,omitempty"`
	// Password of the store: literal, or a placeholder such as
	// `{env.KEYSTORE_PASSWORD}` or `{file./run/secrets/ks-pass}` (resolved
	// at provision; a trailing newline of the file is dropped). Default:
	// empty. Never logged.
	Password string `json:"password,omitempty"`
	// Usage is the extended key usage the leaf must allow: client_auth,
	// server_auth or any. Set by the directive that uses the keystore.
	// Default: any.
	Usage string `json:"usage,omitempty"`

	live
}

// CaddyModule returns the Caddy module information.
func (PKCS12) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".pkcs12",
		New: func() caddy.Module { return new(PKCS12) },
	}
}

// Provision loads the identity (an error fails the config load) and starts
// watching the file.
func (p *PKCS12) Provision(ctx caddy.Context) error {
	return provisionStore(ctx, &p.live, "pkcs12", p.Path, p.Usage, p.Password, "", "")
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	... pkcs12 <path> {
//		password <password|{env.VAR}|{file./path}>
//	}
func (p *PKCS12) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalStore(d, "pkcs12", &p.Path, map[string]*string{"password": &p.Password})
}

// JKS is an identity from a Java keystore: one private-key entry (chosen by
// alias when the store holds several, with its own password or the
// store's) and its certificate chain. PKCS#12 files load too (Java 9+
// keytool writes PKCS#12, often named .jks). Reloads as PKCS12 does.
type JKS struct {
	// Path of the keystore file. Required.
	Path string `json:"path,omitempty"`
	// Password of the store (it checks the store's integrity): literal or
	// a placeholder (`{env.VAR}`, `{file./path}`). Required for JKS. Never
	// logged.
	Password string `json:"password,omitempty"`
	// KeyPassword of the private-key entry. Default: the store password.
	// Never logged.
	KeyPassword string `json:"key_password,omitempty"`
	// Alias of the private-key entry. Default: the store's only private-key
	// entry (an error when it holds several).
	Alias string `json:"alias,omitempty"`
	// Usage is the extended key usage the leaf must allow: client_auth,
	// server_auth or any. Set by the directive that uses the keystore.
	// Default: any.
	Usage string `json:"usage,omitempty"`

	live
}

// CaddyModule returns the Caddy module information.
func (JKS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".jks",
		New: func() caddy.Module { return new(JKS) },
	}
}

// Provision loads the identity (an error fails the config load) and starts
// watching the file.
func (j *JKS) Provision(ctx caddy.Context) error {
	return provisionStore(ctx, &j.live, "jks", j.Path, j.Usage, j.Password, j.KeyPassword, j.Alias)
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	... jks <path> {
//		password     <password|{env.VAR}|{file./path}>
//		key_password <password|{env.VAR}|{file./path}>
//		alias        <alias>
//	}
func (j *JKS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalStore(d, "jks", &j.Path, map[string]*string{
		"password":     &j.Password,
		"key_password": &j.KeyPassword,
		"alias":        &j.Alias,
	})
}

// provisionStore acquires the reloadable identity of a PKCS#12 or JKS
// file. Its errors read `loading keystore "<path>": <reason>`, the reason
// starting with the format the reader detected (pkcs12: or jks:); a
// failed reload logs the reason beside kind and source.
func provisionStore(ctx caddy.Context, l *live, kind, path, usageName, password, keyPassword, alias string) error {
	if path == "" {
		return fmt.Errorf("keystore %s: a path is required", kind)
	}
	usage, err := ParseUsage(usageName)
	if err == nil {
		password, err = material.ResolveSecret("password", password)
	}
	if err == nil {
		keyPassword, err = material.ResolveSecret("key_password", keyPassword)
	}
	if err != nil {
		return fmt.Errorf("loading keystore %q: %w", path, err)
	}
	opts := material.StoreOptions{Password: password, KeyPassword: keyPassword}
	if alias != "" {
		opts.Aliases = []string{alias}
	}
	logger := ctx.Logger()
	origin := "keystore " + kind + " " + path // in the log lines of checkKeyPair
	files := []string{path}
	err = l.acquire(ctx, material.Spec[*tls.Certificate]{
		Name: path,
		Key: strings.Join([]string{"keystore", kind, path, material.HashSecret(password),
			material.HashSecret(keyPassword), alias, string(usage)}, "|"),
		Watch: files,
		Load: func() (*material.Loaded[*tls.Certificate], error) {
			datas, digest, err := material.ReadFiles(files)
			if err != nil {
				return nil, material.StoreFileError(err)
			}
			format, err := material.DetectFormat(datas[0])
			if err != nil {
				return nil, err
			}
			if format == material.FormatPKCS12 && alias != "" {
				return nil, fmt.Errorf("the file is a PKCS#12 store, whose entries cannot be chosen by alias: drop alias, or export the entry with `keytool -importkeystore -srcalias %s`", alias)
			}
			cert, err := material.ReadKeyStore(datas[0], opts)
			if err != nil {
				return nil, err
			}
			certs, err := checkKeyPair(cert, usage, origin, true, logger)
			if err != nil {
				return nil, err
			}
			return &material.Loaded[*tls.Certificate]{Value: cert, Certificates: certs, Digest: digest, Files: files}, nil
		},
	})
	if err != nil {
		return fmt.Errorf("loading keystore %q: %w", path, err)
	}
	return nil
}

// unmarshalStore parses `<kind> <path> { <option> <value> ... }`.
func unmarshalStore(d *caddyfile.Dispenser, kind string, path *string, opts map[string]*string) error {
	d.Next() // source name
	if !d.NextArg() {
		return d.Errf("keystore %s: expected the path of the keystore file", kind)
	}
	*path = d.Val()
	if d.NextArg() {
		return d.Errf("keystore %s: unexpected argument '%s' (options go in a block)", kind, d.Val())
	}
	names := slices.Sorted(maps.Keys(opts))
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		dst, ok := opts[opt]
		if !ok {
			return d.Errf("keystore %s: unknown option '%s' (expected %s)", kind, opt, strings.Join(names, ", "))
		}
		if seen[opt] {
			return d.Errf("keystore %s: duplicate option '%s'", kind, opt)
		}
		seen[opt] = true
		if !d.NextArg() {
			return d.Errf("keystore %s: %s needs a value", kind, opt)
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.Errf("keystore %s: %s takes one value", kind, opt)
		}
	}
	return nil
}

// Interface guards
var (
	_ Source                = (*PKCS12)(nil)
	_ caddy.Provisioner     = (*PKCS12)(nil)
	_ caddy.CleanerUpper    = (*PKCS12)(nil)
	_ caddyfile.Unmarshaler = (*PKCS12)(nil)
	_ Source                = (*JKS)(nil)
	_ caddy.Provisioner     = (*JKS)(nil)
	_ caddy.CleanerUpper    = (*JKS)(nil)
	_ caddyfile.Unmarshaler = (*JKS)(nil)
)
