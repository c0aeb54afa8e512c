package upstream

import (
	"fmt"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/trustline/trustline/internal/misplaced"
	"github.com/trustline/trustline/modules/tlsclient"
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
// where <source> is a keystore source and <module> a tls.ca_pool.source
// module. trust_pool is the http transport's tls_trust_pool (give one of
// them); with this transport either is read live at each handshake.
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // transport name
	seg := d.NextSegment()
	name := seg[0].Text
	d = caddyfile.NewDispenser(seg)
	d.Next()
	if d.NextArg() {
		return d.Errf("transport %s: unexpected argument '%s' (options go in a block)", name, d.Val())
	}
	var rest []caddyfile.Token
	var opts tlsclient.Options
	where := "transport " + name
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "client_identity", "trust_pool", "upstream_identity":
			if err := opts.ParseOption(d, where, opt, opt); err != nil {
				return err
			}
		default:
			if is := misplaced.Is(opt); is != "" {
				return d.Errf("%s: %s", where, is)
			}
			rest = append(rest, d.NextSegment()...)
		}
	}
	t.Settings = opts.Settings
	if len(rest) > 0 {
		// the http transport's own options, with the block's braces
		delegated := append(caddyfile.Segment{seg[0], seg[1]}, rest...)
		delegated = append(delegated, seg[len(seg)-1])
		if err := t.HTTPTransport.UnmarshalCaddyfile(caddyfile.NewDispenser(delegated)); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	if opts.TrustPool != nil {
		if t.TLS != nil && t.TLS.CARaw != nil {
			return fmt.Errorf("%s: trust_pool (line %d) and tls_trust_pool both given: use one", where, opts.TrustPoolLine)
		}
		if t.TLS != nil && len(t.TLS.RootCAPEMFiles) > 0 {
			return fmt.Errorf("%s: trust_pool (line %d) and tls_trusted_ca_certs both given: use one", where, opts.TrustPoolLine)
		}
		if t.TLS == nil {
			t.TLS = new(reverseproxy.TLSConfig)
		}
		t.TLS.CARaw = opts.TrustPool
	}
	if err := t.check(); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}
