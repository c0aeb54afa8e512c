package peer

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"
)

// Patterns is a set of identity patterns: a peer matches when, for every
// field that has patterns, at least one of its values matches at least one
// of that field's patterns (values within a field are OR'ed, fields are
// AND'ed). A set with no pattern at all is refused at provision time: it
// would otherwise have to either match or deny everyone silently.
//
// Wildcards (the README has the table): SPIFFE paths, DNS names, URIs and
// emails are globs over their segments (see glob), common_name,
// organization and organizational_unit values with "*" for any run of
// characters, subject and issuer DNs matched attribute by attribute (see
// dn). Patterns are parsed once, in Provision; matching allocates nothing.
type Patterns struct {
	// SPIFFE IDs, exact or with wildcards in the path:
	// "spiffe://example.org/ns/prod/sa/web", "spiffe://example.org/ns/*/sa/web",
	// "spiffe://example.org/ns/prod/**", "spiffe://example.org/**". The trust
	// domain is always literal. Only a valid X509-SVID for client
	// authentication has a SPIFFE ID (exactly one URI SAN, see Identity).
	SPIFFEID []string `json:"spiffe_id,omitempty"`
	// Trust domains ("example.org" or "spiffe://example.org"): the peer's
	// SPIFFE ID is in one of them. Same as "spiffe://<td>/**".
	TrustDomain []string `json:"trust_domain,omitempty"`
	// DNS SAN patterns, case-insensitive ("api.example.com",
	// "*.example.com" one label, "**.svc.cluster.local" any depth).
	DNS []string `json:"dns,omitempty"`
	// URI SAN patterns ("https://example.com/**"), case-sensitive.
	URI []string `json:"uri,omitempty"`
	// Email SAN patterns, case-insensitive ("*@example.com").
	Email []string `json:"email,omitempty"`
	// IP SANs: addresses or CIDR ranges ("10.0.0.0/8", "2001:db8::/32").
	IP []string `json:"ip,omitempty"`
	// Full subject DNs in RFC 4514 form as Go and
	// `openssl x509 -noout -subject -nameopt RFC2253` print them, most
	// specific attribute first: "CN=web,OU=payments,O=Acme,C=US". Matched
	// attribute by attribute, escapes ("\,", "\2C") decoded on both sides:
	// "*" matches any run of characters within one value ("CN=web-*,O=Acme"),
	// an RDN "*" exactly one RDN, an RDN "**" one or more; "\*" is a
	// literal "*". Types ignore case, values do not.
	Subject []string `json:"subject,omitempty"`
	// Subject common names, exact or with "*"; case-sensitive.
	CommonName []string `json:"common_name,omitempty"`
	// Subject organizations (O), exact or with "*"; case-sensitive.
	Organization []string `json:"organization,omitempty"`
	// Subject organizational units (OU), exact or with "*"; case-sensitive.
	OrganizationalUnit []string `json:"organizational_unit,omitempty"`
	// Full issuer DNs, in the same form and with the same wildcards as
	// subject.
	Issuer []string `json:"issuer,omitempty"`
	// SHA-256 fingerprints of the whole certificate (DER), in hex, with or
	// without colons, any case: `openssl x509 -noout -fingerprint -sha256`.
	Fingerprint []string `json:"fingerprint,omitempty"`
	// SHA-256 hashes of the certificate's SubjectPublicKeyInfo, in hex, with
	// or without colons: they survive re-issuance with the same key (HPKP
	// style pins, as `openssl x509 -pubkey | openssl pkey -pubin -outform
	// der | sha256sum` prints them).
	SPKI []string `json:"spki,omitempty"`

	c *compiled
}

// Field names one attribute of an identity that patterns constrain.
type Field uint8

// The fields, in the order they are checked and reported.
const (
	FieldSPIFFEID Field = iota
	FieldTrustDomain
	FieldDNS
	FieldURI
	FieldEmail
	FieldIP
	FieldSubject
	FieldCommonName
	FieldOrganization
	FieldOrganizationalUnit
	FieldIssuer
	FieldFingerprint
	FieldSPKI
	numFields
)

var fieldNames = [numFields]string{
	"spiffe_id", "trust_domain", "dns", "uri", "email", "ip", "subject",
	"common_name", "organization", "organizational_unit", "issuer",
	"fingerprint", "spki",
}

func (f Field) String() string {
	if f < numFields {
		return fieldNames[f]
	}
	return fmt.Sprintf("field(%d)", f)
}

// list returns the configured patterns of f.
func (p *Patterns) list(f Field) *[]string {
	return [numFields]*[]string{
		&p.SPIFFEID, &p.TrustDomain, &p.DNS, &p.URI, &p.Email, &p.IP, &p.Subject,
		&p.CommonName, &p.Organization, &p.OrganizationalUnit, &p.Issuer,
		&p.Fingerprint, &p.SPKI,
	}[f]
}

// Empty reports whether no pattern is configured.
func (p *Patterns) Empty() bool {
	for f := Field(0); f < numFields; f++ {
		if len(*p.list(f)) > 0 {
			return false
		}
	}
	return true
}

// spiffeGroup holds the path patterns of one trust domain, so that the
// trust domain is compared once per group rather than once per pattern.
type spiffeGroup struct {
	td    string
	paths []glob
}

type compiled struct {
	fields  []Field // the fields that have patterns, in check order
	spiffe  []spiffeGroup
	tds     []string
	globs   [numFields][]glob // dns, uri, email, cn, o, ou
	dns     [numFields][]dn   // subject, issuer
	ips     []netip.Prefix
	sums    [numFields][][32]byte // fingerprint, spki
	summary [numFields]string     // "[a, b]" per field, for deny logs
}

// errEmpty is returned by Compile for a set without patterns.
var errEmpty = errors.New("no identity pattern given: an empty policy would match no peer")

// Compile parses and validates every pattern. It is called by Provision
// (and by the Caddyfile parsers, so that a bad pattern fails at adapt
// time); it is safe to call more than once.
func (p *Patterns) Compile() error {
	c := new(compiled)
	var errs []error
	for f := Field(0); f < numFields; f++ {
		vals := *p.list(f)
		if len(vals) == 0 {
			continue
		}
		c.fields = append(c.fields, f)
		c.summary[f] = "[" + strings.Join(vals, ", ") + "]"
		for _, v := range vals {
			if err := c.add(f, v); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", f, v, err))
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(c.fields) == 0 {
		return errEmpty
	}
	p.c = c
	return nil
}

func (c *compiled) add(f Field, v string) error {
	if v == "" {
		return errors.New("empty pattern")
	}
	if strings.ContainsAny(v, " \t\r\n") && f != FieldSubject && f != FieldIssuer &&
		f != FieldCommonName && f != FieldOrganization && f != FieldOrganizationalUnit {
		return errors.New("contains whitespace")
	}
	switch f {
	case FieldSPIFFEID:
		td, path, err := parseSPIFFEPattern(v)
		if err != nil {
			return err
		}
		for i := range c.spiffe {
			if c.spiffe[i].td == td {
				c.spiffe[i].paths = append(c.spiffe[i].paths, path)
				return nil
			}
		}
		c.spiffe = append(c.spiffe, spiffeGroup{td: td, paths: []glob{path}})
	case FieldTrustDomain:
		td, err := spiffeid.TrustDomainFromString(v)
		if err != nil {
			return err
		}
		if strings.Contains(v, "://") && td.IDString() != v {
			return fmt.Errorf("a trust domain has no path; write %q", td.Name())
		}
		c.tds = append(c.tds, td.Name())
	case FieldDNS:
		v = strings.ToLower(strings.TrimSuffix(v, "."))
		for i := 0; i < len(v); i++ {
			if !isDNSChar(v[i]) {
				return fmt.Errorf("%q is not allowed in a DNS name", v[i])
			}
		}
		if strings.HasPrefix(v, ".") || strings.Contains(v, "..") {
			return errors.New("empty DNS label")
		}
		return c.addGlob(f, v, '.')
	case FieldURI:
		return c.addGlob(f, v, '/')
	case FieldEmail:
		v = strings.ToLower(v)
		if strings.Count(v, "@") != 1 {
			return errors.New(`an email pattern has exactly one "@" ("*@example.com")`)
		}
		return c.addGlob(f, v, '@')
	case FieldIP:
		pfx, err := parseIPPattern(v)
		if err != nil {
			return err
		}
		c.ips = append(c.ips, pfx)
	case FieldSubject, FieldIssuer:
		g, err := compileDN(v)
		if err != nil {
			return err
		}
		c.dns[f] = append(c.dns[f], g)
	case FieldCommonName, FieldOrganization, FieldOrganizationalUnit:
		if strings.Contains(v, "**") {
			return errors.New(`"**" has no meaning here; "*" already matches any run of characters`)
		}
		return c.addGlob(f, v, 0)
	case FieldFingerprint, FieldSPKI:
		sum, err := parseHexHash(v)
		if err != nil {
			return err
		}
		c.sums[f] = append(c.sums[f], sum)
	}
	return nil
}

func (c *compiled) addGlob(f Field, v string, sep byte) error {
	g, err := compileGlob(v, sep)
	if err != nil {
		return err
	}
	c.globs[f] = append(c.globs[f], g)
	return nil
}

// parseSPIFFEPattern validates a SPIFFE ID pattern with go-spiffe (its
// wildcards replaced by a valid segment, it must parse as a SPIFFE ID with
// a path) and returns its trust domain and the glob of its path (without
// its leading slash).
func parseSPIFFEPattern(v string) (td string, path glob, err error) {
	const scheme = "spiffe://"
	if !strings.HasPrefix(v, scheme) {
		_, err = spiffeid.FromString(v)
		if err == nil {
			err = errors.New(`a SPIFFE ID starts with "spiffe://"`)
		}
		return td, path, err
	}
	td, rest, _ := strings.Cut(v[len(scheme):], "/")
	if strings.Contains(td, "*") {
		return td, path, errors.New("the trust domain cannot hold wildcards; list each trust domain")
	}
	if rest == "" {
		if _, err := spiffeid.FromString(v); err != nil {
			return td, path, err
		}
		return td, path, fmt.Errorf("names a trust domain, not a workload; to match every ID in it write %q (or trust_domain %s)", v+"/**", td)
	}
	probe := make([]string, 0, 8)
	for _, seg := range strings.Split(rest, "/") {
		switch {
		case seg == "*" || seg == "**":
			probe = append(probe, "x")
		case strings.Contains(seg, "**"):
			return td, path, errMultiStar
		default:
			probe = append(probe, strings.ReplaceAll(seg, "*", "x"))
		}
	}
	if _, err := spiffeid.FromString(scheme + td + "/" + strings.Join(probe, "/")); err != nil {
		return td, path, err
	}
	path, err = compileGlob(rest, '/')
	return td, path, err
}

func parseIPPattern(v string) (pfx netip.Prefix, err error) {
	if strings.Contains(v, "/") {
		pfx, err = netip.ParsePrefix(v) // which refuses zones
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(v); a.Zone() != "" {
			err = errors.New("IP zones are not allowed")
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if err != nil {
		return pfx, err
	}
	if m := pfx.Masked(); m != pfx {
		return pfx, fmt.Errorf("host bits are set; did you mean %s?", m)
	}
	if a := pfx.Addr(); a.Is4In6() {
		if pfx.Bits() < 96 {
			return pfx, errors.New("an IPv4-mapped range needs a prefix length of at least 96")
		}
		return netip.PrefixFrom(a.Unmap(), pfx.Bits()-96), nil
	}
	return pfx, nil
}

// parseHexHash parses a SHA-256 hash written in hex, with or without colons
// between bytes, in any case.
func parseHexHash(v string) ([32]byte, error) {
	var sum [32]byte
	s := strings.ReplaceAll(v, ":", "")
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return sum, fmt.Errorf("%q is not a hex digit", s[i])
		}
	}
	if len(s)%2 != 0 {
		return sum, fmt.Errorf("odd number of hex digits (%d)", len(s))
	}
	if len(s) != 64 {
		return sum, fmt.Errorf("%d bytes, but a SHA-256 hash has 32 (64 hex digits)", len(s)/2)
	}
	if _, err := hex.Decode(sum[:], []byte(s)); err != nil {
		return sum, err
	}
	return sum, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDNSChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '*'
}

// Match reports whether id satisfies the patterns; when it does not, failed
// is the first field (in check order) that no value matched. A nil identity
// (no verified peer) never matches. Match allocates nothing.
func (p *Patterns) Match(id *Identity) (ok bool, failed Field) {
	c := p.c
	if c == nil || id == nil {
		return false, 0
	}
	for _, f := range c.fields {
		if !c.matchField(f, id) {
			return false, f
		}
	}
	return true, 0
}

// matchLogged is Match for the peer matchers: a peer that does not match
// is logged at DEBUG, with where (the remote address).
func (p *Patterns) matchLogged(logger *zap.Logger, id *Identity, where zap.Field) bool {
	ok, failed := p.Match(id)
	if !ok {
		if ce := logger.Check(zap.DebugLevel, "peer did not match"); ce != nil {
			ce.Write(append(append(identityFields(id), p.ruleFields(id, failed)...), where)...)
		}
	}
	return ok
}

func (c *compiled) matchField(f Field, id *Identity) bool {
	switch f {
	case FieldSPIFFEID:
		for i := range c.spiffe {
			if g := &c.spiffe[i]; id.SPIFFEID != "" && g.td == id.TrustDomain {
				return anyGlob(g.paths, id.spiffePath)
			}
		}
		return false
	case FieldTrustDomain:
		return id.SPIFFEID != "" && slices.Contains(c.tds, id.TrustDomain)
	case FieldIP:
		for _, a := range id.IPs {
			for _, pfx := range c.ips {
				if pfx.Contains(a) {
					return true
				}
			}
		}
		return false
	case FieldSubject, FieldIssuer:
		d := id.parsedDN(f)
		for i := range c.dns[f] {
			if c.dns[f][i].match(d) {
				return true
			}
		}
		return false
	case FieldCommonName:
		return id.CommonName != "" && anyGlob(c.globs[f], id.CommonName)
	case FieldFingerprint:
		return slices.Contains(c.sums[f], id.Fingerprint)
	case FieldSPKI:
		return slices.Contains(c.sums[f], id.SPKI)
	}
	for _, v := range id.values(f) {
		if anyGlob(c.globs[f], v) {
			return true
		}
	}
	return false
}

func anyGlob(gs []glob, v string) bool {
	for i := range gs {
		if gs[i].match(v) {
			return true
		}
	}
	return false
}

// Summary describes the patterns of f for logs: "[spiffe://td/a, ...]".
func (p *Patterns) Summary(f Field) string {
	if p.c == nil || f >= numFields {
		return ""
	}
	return p.c.summary[f]
}

// mismatch says why id failed the patterns of failed, for errors and
// explain: `dns "a.example" matches none of [b.example]`.
func (p *Patterns) mismatch(id *Identity, failed Field) string {
	return fmt.Sprintf("%s %q matches none of %s", failed, id.Value(failed), p.Summary(failed))
}

// ruleFields are the log fields of a mismatch: the rule (field) that
// failed, its patterns and the peer's value.
func (p *Patterns) ruleFields(id *Identity, failed Field) []zap.Field {
	return []zap.Field{
		zap.String("rule", failed.String()),
		zap.String("patterns", p.Summary(failed)),
		zap.String("value", id.Value(failed)),
	}
}

// Describe lists the configured patterns for a report, one "field
// value, value" line per field that has patterns, fields and values
// sorted: "dns *.svc", "spiffe_id spiffe://td/a, spiffe://td/b".
func (p *Patterns) Describe() []string {
	var out []string
	for f := Field(0); f < numFields; f++ {
		if vals := *p.list(f); len(vals) > 0 {
			out = append(out, f.String()+" "+strings.Join(slices.Sorted(slices.Values(vals)), ", "))
		}
	}
	slices.Sort(out) // by field name: a space sorts before any letter of one
	return out
}

// Value describes what id holds for f, for logs.
func (id *Identity) Value(f Field) string {
	if id == nil {
		return ""
	}
	switch f {
	case FieldSPIFFEID:
		if id.SPIFFEID == "" && id.SPIFFEReason != "" {
			return "none (" + id.SPIFFEReason + ")"
		}
		return id.SPIFFEID
	case FieldTrustDomain:
		return id.TrustDomain
	case FieldSubject:
		return id.Subject
	case FieldCommonName:
		return id.CommonName
	case FieldIssuer:
		return id.Issuer
	case FieldFingerprint:
		return id.FingerprintHex
	case FieldSPKI:
		return id.SPKIHex
	}
	return strings.Join(id.values(f), ",")
}
