package passthrough

import (
	"cmp"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/trustline/trustline/modules/tlsclient"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens, for use
// in caddy-l4's own Caddyfile syntax (route blocks of the layer4 global
// option or listener wrapper). Syntax:
//
//	passthrough <upstreams...> {
//		<route options of the passthrough block>
//		# after caddy-l4's tls handler terminated the client's TLS:
//		proxy_protocol_identity
//		tls [{
//			client_identity <keystore source> <args...> [{ ... }]
//			upstream_identity <spiffe://td/path|spiffe://td|dns_name...>
//			trust_pool <source> [<args...>]
//			server_name <name>
//		}]
//		tls_server_name <name>
//		tls_client_auth <cert_file> <key_file>
//		tls_trust_pool <source> [<args...>]
//	}
//
// tls_server_name and tls_trust_pool are server_name and trust_pool of
// the tls block (give each once); any tls* option turns upstream TLS on.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // handler name
	rs := newRoute(d)
	rs.opts.h = h
	for d.NextArg() {
		if err := checkUpstream(d.Val()); err != nil {
			return d.Errf("passthrough: %v", err)
		}
		rs.Upstreams = append(rs.Upstreams, d.Val())
	}
	if len(rs.Upstreams) == 0 {
		return d.Errf("passthrough: no upstream: write `passthrough host:port`")
	}
	var useTLS bool
	var tlsOpts tlsclient.Options
	var tlsCfg UpstreamTLS
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if opt == "alpn" {
			return d.Errf("passthrough: alpn belongs to the clienthello matcher here")
		}
		if seen[opt] {
			return d.Errf("passthrough: duplicate option '%s'", opt)
		}
		seen[opt] = true
		var err error
		switch opt {
		case "proxy_protocol_identity":
			if d.NextArg() {
				return d.Errf("passthrough: proxy_protocol_identity takes no argument")
			}
			h.ProxyProtocolIdentity = true
		case "tls":
			if d.NextArg() {
				return d.Errf("passthrough: tls takes no argument (its options go in a block: %s)", tlsclient.OptionNames)
			}
			useTLS = true
			for err == nil && d.NextBlock(1) {
				err = tlsOpts.ParseOption(d, "passthrough: tls", d.Val(), "tls "+d.Val())
			}
		case "tls_server_name", "tls_trust_pool":
			useTLS = true
			err = tlsOpts.ParseOption(d, "passthrough", strings.TrimPrefix(opt, "tls_"), opt)
		case "tls_client_auth":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("passthrough: tls_client_auth takes a certificate file and a key file")
			}
			useTLS = true
			tlsCfg.ClientCertificateFile, tlsCfg.ClientCertificateKeyFile = args[0], args[1]
		default:
			err = rs.opts.parseOption(d, opt)
		}
		if err != nil {
			return err
		}
	}
	h.Route = cmp.Or(h.Route, "passthrough")
	(*Block)(nil).handler(rs)
	if h.ProxyProtocolIdentity && h.ProxyProtocol != "v2" {
		return d.Errf("passthrough: proxy_protocol_identity needs proxy_protocol v2")
	}
	if useTLS {
		tlsCfg.Settings, tlsCfg.CARaw, tlsCfg.ServerName = tlsOpts.Settings, tlsOpts.TrustPool, tlsOpts.ServerName
		if err := tlsclient.Check(&tlsCfg.TLSConfig, &tlsCfg.Settings); err != nil {
			return d.Errf("passthrough: tls: %v", err)
		}
		h.TLS = &tlsCfg
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Handler)(nil)
