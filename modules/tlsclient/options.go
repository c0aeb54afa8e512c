package tlsclient

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/trustline/trustline/modules/keystore"
	"github.com/trustline/trustline/modules/truststore"
)

// Options are the settings the suite adds to a TLS client of a backend,
// as a Caddyfile writes them (transport mtls, the passthrough handler's
// `tls {...}` and tls_* forms, storage redis's `tls {...}`). ParseOption
// is their one parser; each directive copies the result into its config.
type Options struct {
	// Settings are client_identity (the keystore source's module JSON)
	// and upstream_identity (the pins, checked by ParsePins).
	Settings
	// TrustPool is the trust pool source's module JSON
	// (`tls.ca_pool.source.*`, inline_key provider).
	TrustPool json.RawMessage
	// TrustPoolLine is the Caddyfile line of trust_pool, for errors.
	TrustPoolLine int
	// ServerName is the name to send and verify the backend against.
	ServerName string

	given map[string]string // setting -> the spelling it was given as
}

// OptionNames lists the settings ParseOption parses.
const OptionNames = "client_identity, upstream_identity, trust_pool or server_name"

// ParseOption parses one setting (OptionNames) with its arguments and
// block, the cursor on the option's name. where starts the errors
// ("transport mtls", "passthrough: tls"); as names this spelling when a
// setting has two (`tls { server_name }` and tls_server_name). A setting
// given twice is an error.
func (o *Options) ParseOption(d *caddyfile.Dispenser, where, setting, as string) error {
	opt := d.Val()
	if prev, dup := o.given[setting]; dup {
		if prev == as {
			return d.Errf("%s: duplicate option '%s'", where, opt)
		}
		return d.Errf("%s: %s given twice (as %s and as %s): give it once", where, setting, prev, as)
	}
	if o.given == nil {
		o.given = map[string]string{}
	}
	o.given[setting] = as
	switch setting {
	case "client_identity":
		raw, err := keystore.UnmarshalSource(d, where+": "+opt)
		if err != nil {
			return err
		}
		o.ClientIdentityRaw = raw
	case "trust_pool":
		o.TrustPoolLine = d.Line()
		raw, err := truststore.ParsePoolSource(d, where+": "+opt)
		if err != nil {
			return err
		}
		o.TrustPool = raw
	case "upstream_identity":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("%s: %s needs at least one SPIFFE ID (spiffe://td/path), trust domain (spiffe://td) or DNS name", where, opt)
		}
		if _, err := ParsePins(args); err != nil {
			return d.Errf("%s: %v", where, err)
		}
		o.UpstreamIdentity = args
	case "server_name":
		args := d.RemainingArgs()
		if len(args) != 1 {
			return d.Errf("%s: %s takes exactly one value, got %d", where, opt, len(args))
		}
		o.ServerName = args[0]
	default:
		return d.Errf("%s: unknown option '%s' (expected %s)", where, opt, OptionNames)
	}
	return nil
}
