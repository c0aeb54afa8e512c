package peer

import (
	"context"
	"crypto/tls"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/trustline/trustline/modules/material"
)

// Placeholders ({peer.spiffe_id}, {peer.dns.0}, ...; the README's table
// says what each holds) describe the verified identity only: when the
// peer presented no certificate, or one that crypto/tls did not verify
// (client_auth mode request/require without a trust pool), they are all
// empty except {peer.verified} ("false") and {peer.presented}.
const placeholderPrefix = "peer."

var listPlaceholders = map[string]Field{
	"dns": FieldDNS, "uri": FieldURI, "email": FieldEmail, "ip": FieldIP,
	"subject.o": FieldOrganization, "subject.ou": FieldOrganizationalUnit,
}

var scalarPlaceholders = map[string]func(*Identity) string{
	"spiffe_id":    func(id *Identity) string { return id.SPIFFEID },
	"trust_domain": func(id *Identity) string { return id.TrustDomain },
	"spiffe_path": func(id *Identity) string {
		if id.SPIFFEID == "" {
			return ""
		}
		return "/" + id.spiffePath
	},
	"fingerprint":       func(id *Identity) string { return id.FingerprintHex },
	"spki":              func(id *Identity) string { return id.SPKIHex },
	"subject":           func(id *Identity) string { return id.Subject },
	"subject.cn":        func(id *Identity) string { return id.CommonName },
	"issuer":            func(id *Identity) string { return id.Issuer },
	"issuer.cn":         func(id *Identity) string { return id.IssuerCommonName },
	"serial":            func(id *Identity) string { return id.Serial },
	"not_before":        func(id *Identity) string { return material.TimeString(id.NotBefore) },
	"not_after":         func(id *Identity) string { return material.TimeString(id.NotAfter) },
	"client_cert":       func(id *Identity) string { return id.ClientCertValue() },
	"client_cert_chain": func(id *Identity) string { return id.ClientCertChainValue() },
	"cert_pem_escaped":  func(id *Identity) string { return id.PEMEscaped() },
}

// placeholder resolves one {peer.*} name (without the prefix) for a peer
// that presented a certificate (or not) and has a verified identity (or
// not).
func placeholder(name string, presented bool, id *Identity) (string, bool) {
	switch name {
	case "verified":
		return strconv.FormatBool(id != nil), true
	case "presented":
		return strconv.FormatBool(presented), true
	}
	if fn, ok := scalarPlaceholders[name]; ok {
		if id == nil {
			return "", true
		}
		return fn(id), true
	}
	if f, ok := listPlaceholders[name]; ok {
		if id == nil {
			return "", true
		}
		return strings.Join(id.values(f), ","), true
	}
	// indexed: dns.0, uri.1, ...
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		f, ok := listPlaceholders[name[:i]]
		n, err := strconv.Atoi(name[i+1:])
		if ok && err == nil && n >= 0 {
			if id == nil {
				return "", true
			}
			if vals := id.values(f); n < len(vals) {
				return vals[n], true
			}
			return "", true
		}
	}
	return "", false
}

// replacerFunc provides the {peer.*} placeholders of one connection. A
// verified identity keeps its function (built once per connection), so
// publishing allocates nothing per request.
func replacerFunc(cs *tls.ConnectionState, id *Identity) caddy.ReplacerFunc {
	switch {
	case id != nil:
		id.lazy.replOnce.Do(func() { id.lazy.repl = makeReplacerFunc(true, id) })
		return id.lazy.repl
	case cs != nil && len(cs.PeerCertificates) > 0:
		return replUnverifiedPresented
	}
	return replNoCertificate
}

var (
	replUnverifiedPresented = makeReplacerFunc(true, nil)
	replNoCertificate       = makeReplacerFunc(false, nil)
)

func makeReplacerFunc(presented bool, id *Identity) caddy.ReplacerFunc {
	return func(key string) (any, bool) {
		name, ok := strings.CutPrefix(key, placeholderPrefix)
		if !ok {
			return nil, false
		}
		if v, ok := placeholder(name, presented, id); ok {
			return v, true
		}
		return nil, false
	}
}

// publishedVar holds, in the request's vars, the identity published for
// the request (a typed nil *Identity for an unverified peer).
const publishedVar = "trustline.peer.identity"

// publish makes the peer identity of r available as {peer.*} placeholders
// and as a "peer" object in the access log, once per request, and returns
// it (nil without a verified peer). Every HTTP module of this package calls
// it, so that the placeholders work in any route that uses one of them.
func publish(r *http.Request) *Identity {
	ctx := r.Context()
	// the vars map directly: one context lookup, not one per GetVar/SetVar
	vars, _ := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	if v, ok := vars[publishedVar]; ok {
		if id, ok := v.(*Identity); ok {
			return id
		}
	}
	id := FromState(r.TLS)
	if vars != nil {
		vars[publishedVar] = id
	}
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(replacerFunc(r.TLS, id))
	}
	if r.TLS != nil && accessLogged(ctx) {
		if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
			var obj zapcore.ObjectMarshaler = id
			switch {
			case id != nil:
			case len(r.TLS.PeerCertificates) > 0:
				obj = logUnverified{presented: true}
			default:
				obj = logUnverified{}
			}
			extra.Set(zap.Object("peer", obj))
		}
	}
	return id
}

// accessLogged reports whether the request's server writes access logs
// (the `log` directive); without them the log object would be built for
// nothing. Outside a Caddy server (tests), it is assumed.
func accessLogged(ctx context.Context) bool {
	srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return !ok || srv == nil || srv.Logs != nil
}

// logUnverified is the access log object of a peer without a verified
// certificate.
type logUnverified struct{ presented bool }

func (l logUnverified) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddBool("verified", false)
	enc.AddBool("presented", l.presented)
	return nil
}

// MarshalLogObject writes the identity as a log object: what an operator
// needs to tell who was let in. Never any key material.
func (id *Identity) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddBool("verified", true)
	if id.SPIFFEID != "" {
		enc.AddString("spiffe_id", id.SPIFFEID)
	} else if id.SPIFFEReason != "" {
		enc.AddString("spiffe_id_rejected", id.SPIFFEReason)
	}
	if id.AnchorTrustDomain != "" {
		enc.AddString("anchor_trust_domain", id.AnchorTrustDomain)
	}
	enc.AddString("subject", id.Subject)
	enc.AddString("issuer", id.Issuer)
	enc.AddString("serial", id.Serial)
	enc.AddString("fingerprint", id.FingerprintHex)
	enc.AddString("not_after", material.TimeString(id.NotAfter))
	return nil
}

// identityFields are the zap fields that describe a peer in a module's own
// log lines (denials, refusals).
func identityFields(id *Identity) []zap.Field {
	if id == nil {
		return []zap.Field{zap.Bool("verified", false)}
	}
	fields := []zap.Field{zap.Bool("verified", true)}
	if id.SPIFFEID != "" {
		fields = append(fields, zap.String("spiffe_id", id.SPIFFEID))
	} else if id.SPIFFEReason != "" {
		fields = append(fields, zap.String("spiffe_id_rejected", id.SPIFFEReason))
	}
	return append(fields,
		zap.String("subject", id.Subject),
		zap.String("issuer", id.Issuer),
		zap.String("serial", id.Serial),
		zap.String("fingerprint", id.FingerprintHex),
	)
}
