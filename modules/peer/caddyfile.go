package peer

import (
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/trustline/trustline/internal/misplaced"
)

// shortNames are the Caddyfile names of the fields: block options, and
// (but spiffe_id: a bare "spiffe://..." is one) short-form prefixes
// ("dns:*.svc"). The JSON names (Field.String) are block options too, and
// "sha256" is both for the fingerprint.
var shortNames = [numFields]string{
	"spiffe_id", "trust_domain", "dns", "uri", "email", "ip", "subject",
	"cn", "o", "ou", "issuer", "fingerprint", "spki",
}

// caddyfileField returns the field a Caddyfile name stands for, as a
// short-form prefix or as a block option.
func caddyfileField(name string, prefix bool) (Field, bool) {
	if name == "sha256" {
		return FieldFingerprint, true
	}
	for f := Field(0); f < numFields; f++ {
		if name == shortNames[f] && !(prefix && f == FieldSPIFFEID) || !prefix && name == fieldNames[f] {
			return f, true
		}
	}
	return 0, false
}

const shortFormHelp = "write a SPIFFE ID (spiffe://...) or prefix the value with trust_domain:, dns:, uri:, email:, ip:, subject:, cn:, o:, ou:, issuer:, sha256: or spki:"

const blockHelp = "spiffe_id, trust_domain, dns, uri, email, ip, subject, cn, o, ou, issuer, fingerprint, spki"

// addShort adds one short-form argument ("spiffe://td/x", "dns:*.svc").
func (p *Patterns) addShort(d *caddyfile.Dispenser, directive, arg string) error {
	if strings.HasPrefix(arg, "spiffe:") {
		p.SPIFFEID = append(p.SPIFFEID, arg)
		return nil
	}
	name, v, ok := strings.Cut(arg, ":")
	if f, known := caddyfileField(name, true); ok && known {
		if v == "" {
			return d.Errf("%s: empty %s pattern %q", directive, f, arg)
		}
		l := p.list(f)
		*l = append(*l, v)
		return nil
	}
	return d.Errf("%s: unknown pattern %q: %s", directive, arg, shortFormHelp)
}

// parseArgs adds the remaining arguments on the line as short-form
// patterns.
func (p *Patterns) parseArgs(d *caddyfile.Dispenser, directive string) error {
	for d.NextArg() {
		if err := p.addShort(d, directive, d.Val()); err != nil {
			return err
		}
	}
	return nil
}

// parseField parses one block line whose first token names a field
// ("dns *.svc.cluster.local api.example.com"); handled is false when the
// token is not a field name, so that the caller can try its own options.
func (p *Patterns) parseField(d *caddyfile.Dispenser, directive string) (handled bool, err error) {
	f, ok := caddyfileField(d.Val(), false)
	if !ok {
		return false, nil
	}
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return true, d.Errf("%s: %s needs at least one pattern", directive, name)
	}
	l := p.list(f)
	*l = append(*l, args...)
	if d.NextBlock(d.Nesting()) {
		return true, d.Errf("%s: %s takes no block", directive, name)
	}
	return true, nil
}

// parseLines parses every line of the directive into p: short-form
// patterns after the directive's name, and field lines in its block. A
// block line that is no field goes to option, the directive's own options
// (nil for none), which reports whether it took the line; own lists those
// options for the error about any other word ("" for none).
func (p *Patterns) parseLines(d *caddyfile.Dispenser, directive string, option func() (bool, error), own string) error {
	for d.Next() {
		if err := p.parseArgs(d, directive); err != nil {
			return err
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			handled, err := p.parseField(d, directive)
			if err == nil && !handled && option != nil {
				handled, err = option()
			}
			if err != nil {
				return err
			}
			if !handled {
				return unknownOption(d, directive, own)
			}
		}
	}
	return nil
}

// parseShadow parses the `shadow` option of peer_authorize and verifier
// peer into *shadow.
func parseShadow(d *caddyfile.Dispenser, directive string, shadow *bool) error {
	if d.NextArg() {
		return d.Errf("%s: shadow takes no argument", directive)
	}
	if *shadow {
		return d.Errf("%s: duplicate option 'shadow'", directive)
	}
	*shadow = true
	return nil
}

// unknownOption is the error for a block line that is neither a field nor
// one of the directive's own options (extra, "" for none).
func unknownOption(d *caddyfile.Dispenser, directive, extra string) error {
	known := blockHelp
	if extra != "" {
		known += ", " + extra
	}
	return d.Errf("%s: unknown option %q (expected one of: %s)%s", directive, d.Val(), known, misplaced.Hint(d.Val()))
}

// validate compiles the patterns collected from the Caddyfile, so that a
// bad pattern fails at adapt time with the directive's name.
func (p *Patterns) validate(d *caddyfile.Dispenser, directive string) error {
	if err := p.Compile(); err != nil {
		if err == errEmpty {
			return d.Errf("%s: no identity pattern given (an empty policy would match no peer); %s", directive, shortFormHelp)
		}
		return d.Errf("%s: %v", directive, err)
	}
	return nil
}
