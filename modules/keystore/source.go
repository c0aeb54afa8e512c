package keystore

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/trustline/trustline/modules/material"
)

// Namespace is the Caddy module namespace of keystore sources. A field
// that holds one is tagged
//
//	`caddy:"namespace=trustline.keystore inline_key=source"`
//
// and its JSON looks like {"source": "pkcs12", "path": "...", ...}.
const Namespace = "trustline.keystore"

// Source is who we are: the current certificate chain and its private
// key. Every keystore module implements it; consumers read KeyPair on
// every handshake, so a rotated keystore applies to the next handshake.
type Source interface {
	// KeyPair returns the current certificate: leaf first, then the chain,
	// with Leaf parsed. It is a lock-free read, never nil once the module is
	// provisioned, and must not be modified.
	KeyPair() *tls.Certificate
	// OnChange registers f to run after each rotation (a changed file, a
	// renewed internal certificate); the returned func unregisters it.
	// f runs on the source's own goroutine and must not block.
	OnChange(f func()) (cancel func())
	// Name names the source in logs and metrics (a file, a CA).
	Name() string
}

// Usage is the extended key usage a consumer needs in the identity's leaf.
type Usage string

// The usages a consumer may require.
const (
	// UsageAny accepts any leaf.
	UsageAny Usage = "any"
	// UsageClientAuth needs the clientAuth extended key usage (or none at
	// all, or anyExtendedKeyUsage), as TLS servers check for client
	// certificates.
	UsageClientAuth Usage = "client_auth"
	// UsageServerAuth needs the serverAuth extended key usage (or none at
	// all, or anyExtendedKeyUsage).
	UsageServerAuth Usage = "server_auth"
)

// ParseUsage reads a usage setting ("", any, client_auth, server_auth;
// "" is any): the one reader for every keystore source.
func ParseUsage(s string) (Usage, error) {
	switch u := Usage(s); u {
	case "", UsageAny:
		return UsageAny, nil
	case UsageClientAuth, UsageServerAuth:
		return u, nil
	}
	return "", fmt.Errorf("usage %q: expected client_auth, server_auth or any", s)
}

// Load loads and provisions the keystore source held in the field named
// field of the struct that holder points to (a json.RawMessage tagged with
// namespace trustline.keystore), requiring usage of the leaf: added to the
// module's JSON when it sets no "usage", so every reload checks it. The
// Source is released by the Cleanup of the config that holds it.
func Load(ctx caddy.Context, holder any, field string, usage Usage) (Source, error) {
	v := reflect.ValueOf(holder).Elem().FieldByName(field)
	raw, ok := v.Interface().(json.RawMessage)
	if !ok {
		return nil, fmt.Errorf("keystore.Load: field %s is not a json.RawMessage", field)
	}
	if usage != "" && usage != UsageAny {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, fmt.Errorf("keystore source: %w", err)
		}
		if _, set := obj["usage"]; !set {
			obj["usage"], _ = json.Marshal(string(usage))
			raw, _ = json.Marshal(obj)
			v.Set(reflect.ValueOf(raw))
		}
	}
	mod, err := ctx.LoadModule(holder, field)
	if err != nil {
		return nil, err
	}
	src, ok := mod.(Source)
	if !ok {
		return nil, fmt.Errorf("module %T is not a keystore source", mod)
	}
	return src, nil
}

// UnmarshalSource parses `<source> <args...> { ... }` at the dispenser's
// next argument (the cursor on the directive, e.g. client_identity) into
// the JSON of a keystore source module: the one Caddyfile parser for
// keystores.
func UnmarshalSource(d *caddyfile.Dispenser, directive string) (json.RawMessage, error) {
	var names []string
	for _, m := range caddy.GetModules(Namespace) {
		names = append(names, m.ID.Name())
	}
	known := strings.Join(names, ", ")
	if !d.NextArg() {
		return nil, d.Errf("%s: expected a keystore source (%s)", directive, known)
	}
	name := d.Val()
	modID := Namespace + "." + name
	if _, err := caddy.GetModule(modID); err != nil {
		return nil, d.Errf("%s: unknown keystore source '%s' (expected one of: %s)", directive, name, known)
	}
	unm, err := caddyfile.UnmarshalModule(d, modID)
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(unm, "source", name, nil), nil
}

// Describe names an identity for logs: subject and serial, never the key.
func Describe(cert *tls.Certificate) string {
	if cert == nil || cert.Leaf == nil {
		return "none"
	}
	return fmt.Sprintf("%s (serial %s)", cert.Leaf.Subject, material.SerialString(cert.Leaf))
}

// CheckUsage checks that leaf may be used for u: it has no extended key
// usage at all, anyExtendedKeyUsage, or the one u needs; the one rule for
// every keystore source, the SPIFFE Workload API's included.
func CheckUsage(leaf *x509.Certificate, u Usage) error {
	want, ok := usageEKU[u]
	if !ok || (len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0) {
		return nil // any usage, or no EKU extension
	}
	var have []string
	for _, e := range leaf.ExtKeyUsage {
		if e == want || e == x509.ExtKeyUsageAny {
			return nil
		}
		have = append(have, ekuName(e))
	}
	for _, oid := range leaf.UnknownExtKeyUsage {
		have = append(have, oid.String())
	}
	return fmt.Errorf("certificate %q (serial %s) lacks the %s extended key usage (it has: %s)",
		leaf.Subject, material.SerialString(leaf), ekuName(want), strings.Join(have, ", "))
}

var usageEKU = map[Usage]x509.ExtKeyUsage{UsageClientAuth: x509.ExtKeyUsageClientAuth, UsageServerAuth: x509.ExtKeyUsageServerAuth}

var ekuNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageClientAuth: "clientAuth", x509.ExtKeyUsageServerAuth: "serverAuth",
	x509.ExtKeyUsageAny: "any", x509.ExtKeyUsageCodeSigning: "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection", x509.ExtKeyUsageTimeStamping: "timeStamping",
	x509.ExtKeyUsageOCSPSigning: "OCSPSigning",
}

func ekuName(e x509.ExtKeyUsage) string {
	if name, ok := ekuNames[e]; ok {
		return name
	}
	return fmt.Sprintf("eku(%d)", e)
}
