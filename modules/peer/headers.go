package peer

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/net/http/httpguts"

	"github.com/trustline/trustline/internal/misplaced"
)

func init() {
	caddy.RegisterModule(ForwardHeaders{})
}

// The identity header family that ForwardHeaders always removes from
// inbound requests, whatever it is configured to set.
const (
	HeaderClientCert      = "Client-Cert"
	HeaderClientCertChain = "Client-Cert-Chain"
	HeaderXFCC            = "X-Forwarded-Client-Cert"
)

// ForwardHeaders forwards the verified peer identity to the next hop in
// request headers, and makes sure a client cannot forge them. On every
// request it first removes every inbound header of the identity family
// (Client-Cert, Client-Cert-Chain, X-Forwarded-Client-Cert, the headers it
// sets, the names in `strip`), in the headers and the trailers, names
// compared without case and with "_" equal to "-" (CGI-style backends map
// both to the same variable). Then, only for a verified client
// certificate, it sets the configured headers from the identity.
type ForwardHeaders struct {
	// ClientCert sets the RFC 9440 Client-Cert header: the certificate's
	// DER as a structured-field byte sequence (":base64:"). Default false
	// in JSON; the bare Caddyfile directive turns it on.
	ClientCert bool `json:"client_cert,omitempty"`

	// ClientCertChain sets the RFC 9440 Client-Cert-Chain header: the rest
	// of the verified chain (issuer first, trust anchor included), each a
	// byte sequence. Requires client_cert (RFC 9440: the chain never comes
	// alone). Default false; the bare Caddyfile directive turns it on.
	ClientCertChain bool `json:"client_cert_chain,omitempty"`

	// XFCC sets Envoy's X-Forwarded-Client-Cert header (always replacing,
	// as Envoy's SANITIZE_SET does). Default: not set.
	XFCC *XFCC `json:"xfcc,omitempty"`

	// Headers sets simple headers: name -> value with placeholders, for
	// example {"X-Spiffe-Id": "{peer.spiffe_id}"}. A header whose value
	// is empty once replaced (the identity lacks that field) is not set.
	Headers map[string]string `json:"headers,omitempty"`

	// PEMHeader names a header to carry the certificate as URL-encoded PEM
	// (nginx's $ssl_client_escaped_cert format). Default: none.
	PEMHeader string `json:"pem_header,omitempty"`

	// Strip lists more inbound header names to remove on every request
	// (legacy names a backend still trusts: X-SSL-Client-Verify,
	// X-Client-DN, ...).
	Strip []string `json:"strip,omitempty"`

	family    []string       // normalized names to strip
	headers   []headerSetter // Headers, compiled
	pemName   string         // PEMHeader, canonical
	maxValues int            // how many headers one request can get
}

// headerSetter sets one configured header: a value that is exactly one
// {peer.*} placeholder is read from the identity directly, anything else
// goes through the request's replacer.
type headerSetter struct {
	name   string // canonical
	tmpl   string
	direct string // the placeholder's name without "peer.", when tmpl is exactly one
}

// XFCC configures the X-Forwarded-Client-Cert header. Hash (the
// certificate's SHA-256), Subject, URI and DNS elements are always set
// (URI and DNS once per SAN, when the certificate has them).
type XFCC struct {
	// By is the By element: this proxy's own identity, typically its
	// SPIFFE ID. Default: omitted.
	By string `json:"by,omitempty"`
	// Cert adds the Cert element: the URL-encoded PEM certificate.
	Cert bool `json:"cert,omitempty"`
	// Chain adds the Chain element: the URL-encoded PEM of the rest of the
	// verified chain.
	Chain bool `json:"chain,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (ForwardHeaders) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.peer_headers",
		New: func() caddy.Module { return new(ForwardHeaders) },
	}
}

// Provision builds the list of names to strip, and warns when the site
// never asks for a client certificate.
func (h *ForwardHeaders) Provision(ctx caddy.Context) error {
	if err := h.Validate(); err != nil {
		return err
	}
	warnNoClientCert(ctx, ctx.Logger(), "forward_peer_identity", "the identity headers it forwards are always absent (it only strips what clients send)")
	h.headers = h.headers[:0]
	for name, tmpl := range h.Headers {
		hs := headerSetter{name: http.CanonicalHeaderKey(name), tmpl: tmpl}
		if inner, ok := strings.CutPrefix(tmpl, "{"+placeholderPrefix); ok && strings.HasSuffix(inner, "}") && !strings.ContainsAny(inner[:len(inner)-1], "{}") {
			if _, known := placeholder(inner[:len(inner)-1], false, nil); known {
				hs.direct = inner[:len(inner)-1]
			}
		}
		h.headers = append(h.headers, hs)
	}
	h.pemName = http.CanonicalHeaderKey(h.PEMHeader)
	h.maxValues = 3 + len(h.headers) + 1 // client_cert, chain, xfcc, headers, pem
	h.family = h.family[:0]
	names := slices.Concat([]string{HeaderClientCert, HeaderClientCertChain, HeaderXFCC}, slices.Collect(maps.Keys(h.Headers)), []string{h.PEMHeader}, h.Strip)
	for _, n := range names {
		if n = normalizeName(n); n != "" && !slices.Contains(h.family, n) {
			h.family = append(h.family, n)
		}
	}
	return nil
}

// Validate checks header names and conflicts.
func (h *ForwardHeaders) Validate() error {
	var errs []error
	if h.ClientCertChain && !h.ClientCert {
		errs = append(errs, errors.New("client_cert_chain requires client_cert (RFC 9440: Client-Cert-Chain never comes without Client-Cert)"))
	}
	set := map[string]string{}
	claim := func(name, by string) {
		if !httpguts.ValidHeaderFieldName(name) {
			errs = append(errs, fmt.Errorf("%s: invalid header name %q", by, name))
			return
		}
		n := normalizeName(name)
		if prev, ok := set[n]; ok {
			errs = append(errs, fmt.Errorf("header %q is set by both %s and %s", name, prev, by))
			return
		}
		set[n] = by
	}
	if h.ClientCert {
		claim(HeaderClientCert, "client_cert")
	}
	if h.ClientCertChain {
		claim(HeaderClientCertChain, "client_cert_chain")
	}
	if h.XFCC != nil {
		claim(HeaderXFCC, "xfcc")
		if hasControl(h.XFCC.By) {
			errs = append(errs, fmt.Errorf("xfcc by %q: contains a control character", h.XFCC.By))
		}
	}
	for name, val := range h.Headers {
		claim(name, "header "+name)
		if !httpguts.ValidHeaderFieldValue(val) {
			errs = append(errs, fmt.Errorf("header %s: value %q contains a line break or another control character", name, val))
		}
	}
	if h.PEMHeader != "" {
		claim(h.PEMHeader, "pem")
	}
	for _, name := range h.Strip {
		if !httpguts.ValidHeaderFieldName(name) {
			errs = append(errs, fmt.Errorf("strip: invalid header name %q", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("forward_peer_identity: %w", err)
	}
	return nil
}

// ServeHTTP strips the identity family, then sets the headers from a
// verified identity.
func (h *ForwardHeaders) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	stripFamily(r.Header, h.family)
	stripFamily(r.Trailer, h.family) // the declared ones (HTTP/2 fills only those)
	if r.Body != nil && r.Body != http.NoBody && (r.Trailer != nil || r.ContentLength < 0) {
		// HTTP/1.1 fills r.Trailer at the end of a chunked body, with
		// every trailer received, declared or not: strip them there too
		r.Body = &trailerStripper{ReadCloser: r.Body, r: r, family: h.family}
	}
	id := publish(r)
	if id == nil {
		return next.ServeHTTP(w, r)
	}
	// one backing array for every value set here; each header gets a
	// slice of capacity 1, so that a later Add reallocates instead of
	// writing into its neighbour
	vals := make([]string, 0, h.maxValues)
	set := func(name, v string) {
		vals = append(vals, v)
		n := len(vals)
		r.Header[name] = vals[n-1 : n : n]
	}
	if h.ClientCert {
		set(HeaderClientCert, id.ClientCertValue())
		if h.ClientCertChain && len(id.Chain) > 0 {
			set(HeaderClientCertChain, id.ClientCertChainValue())
		}
	}
	if h.XFCC != nil {
		set(HeaderXFCC, h.XFCC.cachedValue(id))
	}
	if h.PEMHeader != "" {
		set(h.pemName, id.PEMEscaped())
	}
	var repl *caddy.Replacer
	for i := range h.headers {
		hs := &h.headers[i]
		var v string
		if hs.direct != "" {
			v, _ = placeholder(hs.direct, true, id)
		} else {
			if repl == nil {
				repl, _ = r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			}
			v = hs.tmpl
			if repl != nil {
				v = repl.ReplaceKnown(hs.tmpl, "")
			}
		}
		if v != "" && httpguts.ValidHeaderFieldValue(v) {
			set(hs.name, v)
		}
	}
	return next.ServeHTTP(w, r)
}

// xfccMemo is the XFCC value of one identity for one configuration.
type xfccMemo struct {
	cfg *XFCC
	val string
}

// cachedValue is value, remembered in the identity (per connection) for
// the last configuration that asked.
func (x *XFCC) cachedValue(id *Identity) string {
	if m := id.lazy.xfcc.Load(); m != nil && m.cfg == x {
		return m.val
	}
	v := x.value(id)
	id.lazy.xfcc.Store(&xfccMemo{cfg: x, val: v})
	return v
}

// value builds the XFCC element list for id.
func (x *XFCC) value(id *Identity) string {
	var b strings.Builder
	add := func(key, val string, quote bool) {
		if b.Len() > 0 {
			b.WriteByte(';')
		}
		b.WriteString(key)
		b.WriteByte('=')
		if quote || strings.ContainsAny(val, `,;=" `) {
			b.WriteByte('"')
			for i := 0; i < len(val); i++ {
				if val[i] == '"' || val[i] == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(val[i])
			}
			b.WriteByte('"')
			return
		}
		b.WriteString(val)
	}
	if x.By != "" {
		add("By", x.By, false)
	}
	add("Hash", id.FingerprintHex, false)
	if x.Cert {
		add("Cert", id.PEMEscaped(), true)
	}
	if x.Chain && len(id.Chain) > 0 {
		add("Chain", id.chainPEMEscaped(), true)
	}
	// a control character (a CA may sign one) would break the header:
	// the subject gets RFC 4514 hex escapes, SANs percent-escapes
	add("Subject", escapeControls(id.Subject, '\\'), true)
	for _, u := range id.URIs {
		add("URI", escapeControls(u, '%'), false)
	}
	for _, d := range id.DNSNames {
		add("DNS", escapeControls(d, '%'), false)
	}
	return b.String()
}

// trailerStripper removes the identity family from the request's trailers
// when its body reaches EOF, which is when net/http fills them in (and
// before a reader such as reverse_proxy sees the EOF and forwards them).
type trailerStripper struct {
	io.ReadCloser
	r      *http.Request
	family []string
}

func (b *trailerStripper) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		stripFamily(b.r.Trailer, b.family)
	}
	return n, err
}

// stripFamily deletes every header whose name equals one of family
// (normalized) ignoring case and treating "_" as "-".
func stripFamily(hdr http.Header, family []string) {
	for name := range hdr {
		for _, f := range family {
			if sameName(name, f) {
				delete(hdr, name)
				break
			}
		}
	}
}

// normalizeName lowercases a header name and maps "_" to "-".
func normalizeName(s string) string {
	return strings.ReplaceAll(strings.ToLower(s), "_", "-")
}

// sameName compares a header name with a normalized one, without
// allocating.
func sameName(name, normalized string) bool {
	if len(name) != len(normalized) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != normalized[i] {
			return false
		}
	}
	return true
}

// UnmarshalCaddyfile sets up the handler. Syntax:
//
//	forward_peer_identity
//	forward_peer_identity {
//		client_cert
//		client_cert_chain
//		xfcc {
//			by <uri>
//			cert
//			chain
//		}
//		header <name> <value>
//		pem    <name>
//		strip  <name...>
//	}
//
// Without a block it sets the RFC 9440 Client-Cert and Client-Cert-Chain
// headers. In every case it first removes the inbound identity headers.
func (h *ForwardHeaders) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const directive = "forward_peer_identity"
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("%s: unexpected argument %q; options go in a block", directive, d.Val())
	}
	block := false
	flag := func(opt string, v *bool) error {
		if d.NextArg() {
			return d.Errf("%s: %s takes no argument", directive, opt)
		}
		if *v {
			return d.Errf("%s: duplicate option '%s'", directive, opt)
		}
		*v = true
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		block = true
		switch opt := d.Val(); opt {
		case "client_cert", "client_cert_chain":
			v := map[string]*bool{"client_cert": &h.ClientCert, "client_cert_chain": &h.ClientCertChain}[opt]
			if err := flag(opt, v); err != nil {
				return err
			}
		case "xfcc":
			if h.XFCC != nil {
				return d.Errf("%s: duplicate option 'xfcc'", directive)
			}
			h.XFCC = new(XFCC)
			if d.NextArg() {
				return d.Errf("%s: xfcc takes options in a block (by, cert, chain), not %q", directive, d.Val())
			}
			for n := d.Nesting(); d.NextBlock(n); {
				switch sub := d.Val(); sub {
				case "by":
					if !d.NextArg() {
						return d.Errf("%s: xfcc by needs a value (this proxy's URI, e.g. its SPIFFE ID)", directive)
					}
					h.XFCC.By = d.Val()
					if d.NextArg() {
						return d.Errf("%s: xfcc by takes one value", directive)
					}
				case "cert", "chain":
					v := map[string]*bool{"cert": &h.XFCC.Cert, "chain": &h.XFCC.Chain}[sub]
					if err := flag("xfcc "+sub, v); err != nil {
						return err
					}
				default:
					return d.Errf("%s: unknown xfcc option %q (expected by, cert or chain)", directive, sub)
				}
			}
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("%s: header takes a name and a value, e.g. header X-Spiffe-Id {peer.spiffe_id}", directive)
			}
			if h.Headers == nil {
				h.Headers = map[string]string{}
			}
			if _, dup := h.Headers[args[0]]; dup {
				return d.Errf("%s: duplicate header %q", directive, args[0])
			}
			h.Headers[args[0]] = args[1]
		case "pem":
			if !d.NextArg() {
				return d.Errf("%s: pem needs a header name, e.g. pem X-SSL-Client-Cert", directive)
			}
			if h.PEMHeader != "" {
				return d.Errf("%s: duplicate option 'pem'", directive)
			}
			h.PEMHeader = d.Val()
			if d.NextArg() {
				return d.Errf("%s: pem takes one header name", directive)
			}
		case "strip":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.Errf("%s: strip needs at least one header name", directive)
			}
			h.Strip = append(h.Strip, names...)
		default:
			return d.Errf("%s: unknown option %q (expected client_cert, client_cert_chain, xfcc, header, pem or strip)%s", directive, opt, misplaced.Hint(opt))
		}
	}
	if !block {
		h.ClientCert, h.ClientCertChain = true, true
	}
	if err := h.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ForwardHeaders)(nil)
	_ caddy.Validator             = (*ForwardHeaders)(nil)
	_ caddyhttp.MiddlewareHandler = (*ForwardHeaders)(nil)
	_ caddyfile.Unmarshaler       = (*ForwardHeaders)(nil)
)
