package upstream

import (
	"fmt"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/trustline/trustline/modules/keystore"
)

// UnmarshalCaddyfile sets up the transport from Caddyfile tokens. Options
// other than the three below are those of Caddy's http transport, parsed
// by it.
//
// Syntax:
//
//	transport mtls {
//		client_identity   <source> <args...> {
//			...
//		}
//		trust_pool        <module> <args...> {
//			...
//		}
//		upstream_identity <spiffe_id|spiffe://trust.domain|dns_name...>
//		<option of the http transport> ...
//	}
//
// where <source> is a keystore source (pem, pkcs12, jks, internal) and
// <module> a tls.ca_pool.source module (file, inline, truststore, bundle,
// pki_live, spiffe_bundle, ...). trust_pool is the same setting as the
// http transport's tls_trust_pool (give one of them); with this transport
// either is read live at each upstream handshake.
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // transport name
	seg := d.NextSegment()
	if err := t.unmarshal(seg); err != nil {
		return err
	}
	return nil
}

func (t *Transport) unmarshal(seg caddyfile.Segment) error {
	name := seg[0].Text
	d := caddyfile.NewDispenser(seg)
	d.Next()
	if d.NextArg() {
		return d.Errf("transport %s: unexpected argument '%s' (options go in a block)", name, d.Val())
	}
	var rest []caddyfile.Token
	var trustPool *struct {
		raw  []byte
		line int
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "client_identity", "trust_pool", "upstream_identity":
			if seen[opt] {
				return d.Errf("transport %s: duplicate option '%s'", name, opt)
			}
			seen[opt] = true
		}
		switch opt {
		case "client_identity":
			raw, err := keystore.UnmarshalSource(d, "transport "+name+": client_identity")
			if err != nil {
				return err
			}
			t.ClientIdentityRaw = raw
		case "trust_pool":
			line := d.Line()
			if !d.NextArg() {
				return d.Errf("transport %s: trust_pool: expected a tls.ca_pool.source module (file, inline, truststore, bundle, pki_live, spiffe_bundle, ...)", name)
			}
			stem := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "tls.ca_pool.source."+stem)
			if err != nil {
				return err
			}
			ca, ok := unm.(caddytls.CA)
			if !ok {
				return d.Errf("transport %s: trust_pool: module %s is not a certificate pool provider", name, stem)
			}
			trustPool = &struct {
				raw  []byte
				line int
			}{caddyconfig.JSONModuleObject(ca, "provider", stem, nil), line}
		case "upstream_identity":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("transport %s: upstream_identity needs at least one SPIFFE ID, trust domain or DNS name", name)
			}
			if _, err := ParsePins(args); err != nil {
				return d.Errf("transport %s: %v", name, err)
			}
			t.UpstreamIdentity = args
		default:
			rest = append(rest, d.NextSegment()...)
		}
	}
	if len(rest) > 0 {
		// the http transport's own options, with the block's braces
		delegated := append(caddyfile.Segment{seg[0], seg[1]}, rest...)
		delegated = append(delegated, seg[len(seg)-1])
		if err := t.HTTPTransport.UnmarshalCaddyfile(caddyfile.NewDispenser(delegated)); err != nil {
			return fmt.Errorf("transport %s: %w", name, err)
		}
	}
	if trustPool != nil {
		if t.TLS != nil && t.TLS.CARaw != nil {
			return fmt.Errorf("transport %s: trust_pool (line %d) and tls_trust_pool both given: use one", name, trustPool.line)
		}
		if t.TLS != nil && len(t.TLS.RootCAPEMFiles) > 0 {
			return fmt.Errorf("transport %s: trust_pool (line %d) and tls_trusted_ca_certs both given: use one", name, trustPool.line)
		}
		if t.TLS == nil {
			t.TLS = new(reverseproxy.TLSConfig)
		}
		t.TLS.CARaw = trustPool.raw
	}
	if t.usesTLSFeatures() && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	if err := t.check(); err != nil {
		return fmt.Errorf("transport %s: %w", name, err)
	}
	return nil
}
