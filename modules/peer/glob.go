package peer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// glob is a compiled wildcard pattern over a string made of segments joined
// by sep (sep 0: the whole string is one segment).
//
//   - A segment "*" matches exactly one non-empty segment.
//   - A "*" inside a segment ("web-*", "*-prod") matches any run of
//     characters within that segment, never the separator.
//   - A segment "**" (at most one per pattern) matches one or more whole
//     segments, wherever it stands: "spiffe://td/ns/**" is a path prefix,
//     "**.svc.cluster.local" any name under that suffix.
//   - Everything else is literal.
//
// Matching never allocates.
type glob struct {
	sep           byte
	before, after []seg // segments before and after "**" (all of them in before without one)
	multi         bool  // the pattern has a "**" segment
	// prefix and suffix are the literal text before the first and after
	// the last wildcard: cheap necessary conditions checked first.
	prefix, suffix string
}

// seg is one segment (or value) pattern, split at its wildcards: "web-*"
// is {"web-", ""}, a literal has one part, and "*" alone ({"", ""})
// matches any non-empty value.
type seg []string

var errMultiStar = errors.New(`"**" may appear only once, as a whole segment`)

// compileGlob parses a pattern; the caller has validated its characters.
func compileGlob(pattern string, sep byte) (glob, error) {
	if !strings.Contains(pattern, "*") {
		return glob{before: []seg{{pattern}}}, nil // literal: one comparison
	}
	g := glob{sep: sep, prefix: pattern[:strings.IndexByte(pattern, '*')], suffix: pattern[strings.LastIndexByte(pattern, '*')+1:]}
	parts := []string{pattern}
	if sep != 0 {
		parts = strings.Split(pattern, string(sep))
	}
	var segs []seg
	for _, s := range parts {
		switch {
		case s == "**" && sep != 0:
			if g.multi {
				return g, errMultiStar
			}
			g.multi, g.before, segs = true, segs, nil
		case strings.Contains(s, "**"):
			return g, errMultiStar
		default:
			segs = append(segs, strings.Split(s, "*"))
		}
	}
	if g.multi {
		g.after = segs
	} else {
		g.before = segs
	}
	return g, nil
}

// match reports whether s matches g: the segments before "**" from the
// front, those after it from the back, and at least one segment left
// between them for "**".
func (g *glob) match(s string) bool {
	if g.sep == 0 {
		return g.before[0].match(s)
	}
	if len(s) < len(g.prefix)+len(g.suffix) || !strings.HasPrefix(s, g.prefix) || !strings.HasSuffix(s, g.suffix) {
		return false
	}
	for i := range g.before {
		part, rest, more := cutByte(s, g.sep)
		// without "**" the pattern and s end together
		if more != (g.multi || i < len(g.before)-1) || !g.before[i].match(part) {
			return false
		}
		s = rest
	}
	if !g.multi {
		return true
	}
	for i := len(g.after) - 1; i >= 0; i-- {
		j := strings.LastIndexByte(s, g.sep)
		if j < 0 || !g.after[i].match(s[j+1:]) {
			return false
		}
		s = s[:j]
	}
	return s != ""
}

func cutByte(s string, sep byte) (before, after string, found bool) {
	if i := strings.IndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// match matches v against the parts of p: the first is a prefix, the last
// a suffix, the others occur in order between them.
func (p seg) match(v string) bool {
	if len(p) == 1 {
		return v == p[0] // (kept apart, so that it inlines)
	}
	return p.matchWild(v)
}

func (p seg) matchWild(v string) bool {
	first, last := p[0], p[len(p)-1]
	if len(v) < len(first)+len(last) || v[:len(first)] != first || v[len(v)-len(last):] != last {
		return false
	}
	if len(p) == 2 && first == "" && last == "" {
		return v != "" // "*" alone
	}
	v = v[len(first) : len(v)-len(last)]
	for _, m := range p[1 : len(p)-1] {
		j := strings.Index(v, m)
		if j < 0 {
			return false
		}
		v = v[j+len(m):]
	}
	return true
}

// dn is a distinguished name in RFC 4514 string form, as Go's
// pkix.Name.String and `openssl x509 -nameopt RFC2253` print it, split
// into RDNs and attributes with the values decoded: a subject or issuer
// pattern, or (without wildcards) the DN of a certificate. Matching one
// against the other RDN by RDN and attribute by attribute means a
// wildcard never reaches across a separator, and an escaped "," or "+"
// inside a value stays part of that value. (Go's string, not the
// certificate's pkix.Name, is what is parsed: it is the form patterns are
// written in, with Go's own attribute names, order and hex forms.)
//
// In a pattern:
//
//   - An RDN "*" matches exactly one RDN; an RDN "**" (at most one per
//     pattern) matches one or more RDNs.
//   - Otherwise an RDN is "type=value" pairs joined by "+" (a multi-valued
//     RDN, compared pair by pair in order). The type is literal and
//     compared without case ("cn" = "CN"); in the value "*" matches any run
//     of characters within that value (a value of just "*" any non-empty
//     one), and RFC 4514 escapes ("\,", "\2C") are decoded on both sides.
//     "\*" is a literal "*". Spaces after a separator are ignored
//     ("CN=web, O=Acme"); a space at either end of a value is escaped.
//   - A value starting with an unescaped "#" is the hex form of the
//     attribute's encoding (Go prints unknown attributes so): compared
//     literally, hex digits without case, never with a string value.
//
// Matching never allocates.
type dn struct {
	before, after []rdn // RDNs before and after "**" (all of them in before without one)
	multi         bool
}

type rdn struct {
	any  bool  // "*": any one RDN
	atvs []atv // the attributes, in order
}

type atv struct {
	typ string // attribute type, upper case
	hex bool   // the value is in "#" hex form (then lower case)
	val seg    // the decoded value, split at its wildcards
}

// compileDN parses a subject or issuer pattern.
func compileDN(pattern string) (dn, error) { return parseDN(pattern, true) }

// parseDN parses a DN; wild: a pattern, with "*" and "**".
func parseDN(s string, wild bool) (dn, error) {
	var d dn
	var rdns []rdn
	for _, part := range splitDN(s, false) {
		r, err := parseRDN(part, wild)
		if err != nil {
			return d, err
		}
		if r == nil { // "**"
			if d.multi {
				return d, errors.New(`"**" may appear only once, as a whole RDN`)
			}
			d.multi, d.before, rdns = true, rdns, nil
		} else {
			rdns = append(rdns, *r)
		}
	}
	if d.multi {
		d.after = rdns
	} else {
		d.before = rdns
	}
	return d, nil
}

// parseRDN parses one RDN; nil stands for "**".
func parseRDN(s string, wild bool) (*rdn, error) {
	switch s = strings.TrimLeft(s, " "); {
	case s == "":
		return nil, errors.New("empty RDN (two separators in a row, or one at an end)")
	case s == "*" && wild:
		return &rdn{any: true}, nil
	case s == "**" && wild:
		return nil, nil
	}
	var r rdn
	for _, part := range splitDN(s, true) {
		a, err := parseATV(part, wild)
		if err != nil {
			return nil, err
		}
		r.atvs = append(r.atvs, a)
	}
	return &r, nil
}

func parseATV(s string, wild bool) (atv, error) {
	var a atv
	if s == "" {
		return a, errors.New(`empty attribute (a "+" at an end of an RDN)`)
	}
	if wild && (s == "*" || s == "**") {
		return a, fmt.Errorf(`%q stands only as a whole RDN, not beside "+"`, s)
	}
	s = strings.TrimLeft(s, " ") // "CN=web, O=Acme" as RFC 1779 wrote it
	typ, val, ok := strings.Cut(s, "=")
	if !ok {
		return a, fmt.Errorf(`%q has no "=": an RDN is type=value, "*" or "**"`, s)
	}
	if err := checkDNType(typ); err != nil {
		return a, err
	}
	a.typ = strings.ToUpper(typ) // types compare without case
	if strings.HasPrefix(val, "#") {
		hexv := val[1:]
		if len(hexv) == 0 || len(hexv)%2 != 0 || strings.IndexFunc(hexv, func(r rune) bool { return r > 0x7f || !isHex(byte(r)) }) >= 0 {
			return a, fmt.Errorf(`%s value %q: a value starting with "#" is the hex form of its encoding and holds only hex digits, no wildcard; escape a leading "#" as "\#"`, typ, val)
		}
		a.hex, a.val = true, seg{strings.ToLower(hexv)}
		return a, nil
	}
	if wild && strings.Contains(val, "**") {
		return a, errors.New(`"**" has no meaning in a value ("*" already matches any run of characters); as a whole RDN it matches one or more RDNs`)
	}
	var part []byte
	rawSpace := false // the last byte is an unescaped space
	for i := 0; i < len(val); i++ {
		c := val[i]
		rawSpace = c == ' '
		if rawSpace && i == 0 {
			break
		}
		switch c {
		case '*':
			if wild {
				a.val = append(a.val, string(part))
				part = part[:0]
				continue
			}
		case '"':
			return a, fmt.Errorf(`%s value %q: a quote must be escaped as \" (quoted values are not RFC 4514)`, typ, val)
		case '\\':
			if i+1 == len(val) {
				return a, fmt.Errorf(`%s value %q ends in a lone "\"`, typ, val)
			}
			n := val[i+1]
			switch {
			case i+2 < len(val) && isHex(n) && isHex(val[i+2]):
				b, _ := strconv.ParseUint(val[i+1:i+3], 16, 8)
				c = byte(b)
				i += 2
			case strings.IndexByte(dnSpecial, n) >= 0:
				c = n
				i++
			default:
				return a, fmt.Errorf(`%s value %q: bad escape "\%c" (escape one of %s or write two hex digits)`, typ, val, n, dnSpecial)
			}
		}
		part = append(part, c)
	}
	if rawSpace {
		return a, fmt.Errorf(`%s value %q: a space at either end of a value is escaped ("\ "); no spaces around separators`, typ, val)
	}
	a.val = append(a.val, string(part))
	return a, nil
}

// dnSpecial are the characters that may follow "\" in a DN: RFC 4514's
// specials, "=" and the literal "*".
const dnSpecial = ` "#+,;<=>\*`

// checkDNType accepts an attribute type as RFC 4514 writes it: a keyword
// (letter, then letters, digits, "-") or a numeric OID.
func checkDNType(t string) error {
	if t == "" {
		return errors.New(`empty attribute type (nothing before "=")`)
	}
	const digits = "0123456789"
	var ok bool
	if c := t[0]; strings.IndexByte(digits, c) >= 0 {
		ok = strings.Trim(t, digits+".") == "" && !strings.Contains(t+".", "..")
	} else {
		ok = c != '-' && strings.Trim(t, digits+"-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") == ""
	}
	if !ok {
		return fmt.Errorf(`attribute type %q is neither a name ("CN") nor an OID ("2.5.4.3"); no spaces around separators and no wildcards in types`, t)
	}
	return nil
}

// splitDN splits s at each unescaped "," (or, with plus, "+").
func splitDN(s string, plus bool) (parts []string) {
	start := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			i++
		case c == ',' || plus && c == '+':
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// match reports whether the DN d (parsed without wildcards) matches g.
func (g *dn) match(d *dn) bool {
	rdns := d.before
	n := len(rdns) - len(g.before) - len(g.after) // what "**" takes
	if n < 0 || n > 0 != g.multi {
		return false
	}
	return matchRDNs(g.before, rdns) && matchRDNs(g.after, rdns[len(rdns)-len(g.after):])
}

func matchRDNs(pats, rdns []rdn) bool {
	for i := range pats {
		p, r := &pats[i], &rdns[i]
		if p.any {
			continue
		}
		if len(p.atvs) != len(r.atvs) {
			return false
		}
		for k := range p.atvs {
			a, b := &p.atvs[k], &r.atvs[k]
			if a.hex != b.hex || a.typ != b.typ || !a.val.match(b.val[0]) {
				return false
			}
		}
	}
	return true
}
