package peer

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
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
	sep    byte
	before []seg // segments before "**" (all segments when !multi)
	after  []seg // segments after "**"
	multi  bool  // the pattern has a "**" segment
	plain  bool  // no wildcard: compare with lit
	lit    string
	// prefix and suffix are the literal text before the first and after
	// the last wildcard: cheap necessary conditions checked first.
	prefix, suffix string
}

type segKind uint8

const (
	segLit  segKind = iota // literal
	segAny                 // "*": any non-empty segment
	segGlob                // "*" inside the segment
)

type seg struct {
	s    string
	kind segKind
}

var errMultiStar = errors.New(`"**" may appear only once, as a whole segment`)

// compileGlob parses a pattern; the caller has validated its characters.
func compileGlob(pattern string, sep byte) (glob, error) {
	g := glob{sep: sep}
	first, last := strings.IndexByte(pattern, '*'), strings.LastIndexByte(pattern, '*')
	if first < 0 {
		g.plain, g.lit = true, pattern
		return g, nil
	}
	g.prefix, g.suffix = pattern[:first], pattern[last+1:]
	var parts []string
	if sep == 0 {
		parts = []string{pattern}
	} else {
		parts = strings.Split(pattern, string(sep))
	}
	var segs []seg
	for _, s := range parts {
		switch {
		case s == "**" && sep != 0:
			if g.multi {
				return g, errMultiStar
			}
			g.multi = true
			g.before, segs = segs, nil
			continue
		case strings.Contains(s, "**"):
			return g, errMultiStar
		case s == "*":
			segs = append(segs, seg{s, segAny})
		case strings.Contains(s, "*"):
			segs = append(segs, seg{s, segGlob})
		default:
			segs = append(segs, seg{s, segLit})
		}
	}
	if g.multi {
		g.after = segs
	} else {
		g.before = segs
	}
	return g, nil
}

// match reports whether s matches g.
func (g *glob) match(s string) bool {
	if g.plain {
		return s == g.lit
	}
	if len(s) < len(g.prefix)+len(g.suffix) || s[:len(g.prefix)] != g.prefix || s[len(s)-len(g.suffix):] != g.suffix {
		return false
	}
	if g.sep == 0 {
		return g.before[0].match(s)
	}
	rest := s
	if !g.multi {
		for i := range g.before {
			part, tail, more := cutByte(rest, g.sep)
			if !g.before[i].match(part) {
				return false
			}
			if last := i == len(g.before)-1; last == more {
				return false // the pattern and s must end together
			}
			rest = tail
		}
		return true
	}
	// "**" needs at least one segment, so every segment before it must be
	// followed by a separator.
	for i := range g.before {
		part, tail, more := cutByte(rest, g.sep)
		if !more || !g.before[i].match(part) {
			return false
		}
		rest = tail
	}
	for i := len(g.after) - 1; i >= 0; i-- {
		j := strings.LastIndexByte(rest, g.sep)
		if j < 0 {
			return false // nothing left for "**"
		}
		if !g.after[i].match(rest[j+1:]) {
			return false
		}
		rest = rest[:j]
	}
	return rest != ""
}

func (p *seg) match(s string) bool {
	switch p.kind {
	case segLit:
		return s == p.s
	case segAny:
		return s != ""
	}
	return wildcard(p.s, s)
}

func cutByte(s string, sep byte) (before, after string, found bool) {
	if i := strings.IndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// wildcard matches s against p, in which '*' matches any run of
// characters.
func wildcard(p, s string) bool {
	// iterative match with a single backtrack point
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// dnGlob is a compiled subject or issuer pattern: a distinguished name in
// RFC 4514 string form, as Go's pkix.Name.String and `openssl x509
// -nameopt RFC2253` print it, matched RDN by RDN and attribute by
// attribute, so that a wildcard never reaches across a separator and an
// escaped "," or "+" inside a value stays part of that value.
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
type dnGlob struct {
	before []rdnPat // RDNs before "**" (all RDNs when !multi)
	after  []rdnPat // RDNs after "**"
	multi  bool
	// exact is set for a pattern without wildcards: the DN as Go prints
	// it, compared as a string. For the others, prefix and suffix are the
	// literal text at either end, as Go prints it: cheap necessary
	// conditions checked first.
	exact, prefix, suffix string
	plain                 bool
}

type rdnPat struct {
	any  bool     // "*": any one RDN
	atvs []atvPat // the attributes, in order
}

type atvPat struct {
	typ string // attribute type, as written
	hex bool   // the value is in "#" hex form
	// parts is the decoded value split at its wildcards: a value without
	// a wildcard has one part; "a*b" has "a" and "b".
	parts []string
}

// compileDN parses a subject or issuer pattern.
func compileDN(pattern string) (dnGlob, error) {
	var g dnGlob
	var rdns []rdnPat
	for i := 0; ; {
		end := dnNext(pattern, i, false)
		rdn, err := compileRDN(pattern[i:end])
		if err != nil {
			return g, err
		}
		if rdn == nil { // "**"
			if g.multi {
				return g, errors.New(`"**" may appear only once, as a whole RDN`)
			}
			g.multi, g.before, rdns = true, rdns, nil
		} else {
			rdns = append(rdns, *rdn)
		}
		if end == len(pattern) {
			break
		}
		i = end + 1
	}
	if g.multi {
		g.after = rdns
	} else {
		g.before = rdns
	}
	canonicalDN(&g)
	return g, nil
}

// canonicalDN sets g.exact for a pattern without wildcards: the DN as
// Go's pkix.Name.String prints the DN it matches (attribute names upper
// case, hex lower case, values escaped as Go escapes them). Otherwise it
// sets g.prefix and g.suffix from the literal RDNs at either end. A value
// that is not UTF-8 is never printed so by Go (U+FFFD instead), and stops
// the literal text there.
func canonicalDN(g *dnGlob) {
	var b strings.Builder
	complete := true // every RDN before "**" (or of all) is literal
	for i := range g.before {
		if i > 0 {
			b.WriteByte(',')
		}
		if !canonicalRDN(&b, &g.before[i]) {
			complete = false
			break
		}
	}
	switch {
	case complete && !g.multi:
		g.exact, g.plain = b.String(), true
		return
	case complete && len(g.before) > 0:
		b.WriteByte(',') // "**" follows
	}
	g.prefix = b.String()
	rdns := g.before
	if g.multi {
		rdns = g.after
	}
	for i := len(rdns) - 1; i >= 0; i-- {
		var t strings.Builder
		t.WriteByte(',')
		if !canonicalRDN(&t, &rdns[i]) {
			break
		}
		g.suffix = t.String() + g.suffix
	}
}

// canonicalRDN writes r as Go prints it; for an RDN with a wildcard it
// writes what it can of the start ("CN=" of "CN=web-*") and returns false.
func canonicalRDN(b *strings.Builder, r *rdnPat) bool {
	if r.any {
		return false
	}
	for j, a := range r.atvs {
		if j > 0 {
			b.WriteByte('+')
		}
		b.WriteString(strings.ToUpper(a.typ))
		b.WriteByte('=')
		v := a.parts[0]
		if len(a.parts) != 1 || !utf8.ValidString(v) {
			return false
		}
		if a.hex {
			b.WriteByte('#')
			b.WriteString(v)
			continue
		}
		for k, c := range v {
			switch {
			case strings.ContainsRune(`,+"\\<>;`, c), c == ' ' && (k == 0 || k == len(v)-1), c == '#' && k == 0:
				b.WriteByte('\\')
			}
			b.WriteRune(c)
		}
	}
	return true
}

// compileRDN parses one RDN of a pattern; nil stands for "**".
func compileRDN(s string) (*rdnPat, error) {
	switch s = strings.TrimLeft(s, " "); s {
	case "":
		return nil, errors.New("empty RDN (two separators in a row, or one at an end)")
	case "*":
		return &rdnPat{any: true}, nil
	case "**":
		return nil, nil
	}
	var r rdnPat
	for i := 0; ; {
		end := dnNext(s, i, true)
		atv, err := compileATV(s[i:end])
		if err != nil {
			return nil, err
		}
		r.atvs = append(r.atvs, atv)
		if end == len(s) {
			return &r, nil
		}
		i = end + 1
	}
}

func compileATV(s string) (atvPat, error) {
	var a atvPat
	if s == "" {
		return a, errors.New(`empty attribute (a "+" at an end of an RDN)`)
	}
	if s == "*" || s == "**" {
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
	a.typ = typ
	if strings.HasPrefix(val, "#") {
		hexv := val[1:]
		if len(hexv) == 0 || len(hexv)%2 != 0 || strings.IndexFunc(hexv, func(r rune) bool { return r > 0x7f || !isHex(byte(r)) }) >= 0 {
			return a, fmt.Errorf(`%s value %q: a value starting with "#" is the hex form of its encoding and holds only hex digits, no wildcard; escape a leading "#" as "\#"`, typ, val)
		}
		a.hex, a.parts = true, []string{strings.ToLower(hexv)}
		return a, nil
	}
	if strings.Contains(val, "**") {
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
			a.parts = append(a.parts, string(part))
			part = part[:0]
			continue
		case '"':
			return a, fmt.Errorf(`%s value %q: a quote must be escaped as \" (quoted values are not RFC 4514)`, typ, val)
		case '\\':
			if i+1 == len(val) {
				return a, fmt.Errorf(`%s value %q ends in a lone "\"`, typ, val)
			}
			n := val[i+1]
			switch {
			case i+2 < len(val) && isHex(n) && isHex(val[i+2]):
				c = unhex(n)<<4 | unhex(val[i+2])
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
	a.parts = append(a.parts, string(part))
	return a, nil
}

// dnSpecial are the characters that may follow "\" in a pattern: RFC
// 4514's specials, "=" and the literal "*".
const dnSpecial = ` "#+,;<=>\*`

// checkDNType accepts an attribute type as RFC 4514 writes it: a keyword
// (letter, then letters, digits, "-") or a numeric OID.
func checkDNType(t string) error {
	if t == "" {
		return errors.New(`empty attribute type (nothing before "=")`)
	}
	ok := true
	if c := t[0]; c >= '0' && c <= '9' {
		for _, arc := range strings.Split(t, ".") {
			if arc == "" || strings.IndexFunc(arc, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
				ok = false
			}
		}
	} else {
		for i := 0; i < len(t); i++ {
			c := t[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '-')) {
				ok = false
			}
		}
	}
	if !ok {
		return fmt.Errorf(`attribute type %q is neither a name ("CN") nor an OID ("2.5.4.3"); no spaces around separators and no wildcards in types`, t)
	}
	return nil
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// dnNext returns the index of the first unescaped "," (or, with plus, "+")
// at or after i, or len(s).
func dnNext(s string, i int, plus bool) int {
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ',':
			return i
		case '+':
			if plus {
				return i
			}
		}
	}
	return len(s)
}

// match reports whether the DN s (Go's RFC 4514 form) matches g.
func (g *dnGlob) match(s string) bool {
	if g.plain {
		return s == g.exact
	}
	if !strings.HasPrefix(s, g.prefix) || !strings.HasSuffix(s, g.suffix) {
		return false
	}
	return g.walk(s)
}

// walk is match, RDN by RDN.
func (g *dnGlob) walk(s string) bool {
	if s == "" {
		return false // no RDN at all, and every pattern asks for one
	}
	i, ok := matchRDNs(g.before, s, 0)
	if !ok {
		return false
	}
	if !g.multi {
		return i == len(s)+1
	}
	if i > len(s) {
		return false // nothing left for "**"
	}
	// skip all but the last len(g.after) RDNs; "**" takes at least one
	n := 0
	for j := i; j <= len(s); j = dnNext(s, j, false) + 1 {
		n++
	}
	if n <= len(g.after) {
		return false
	}
	for k := n - len(g.after); k > 0; k-- {
		i = dnNext(s, i, false) + 1
	}
	i, ok = matchRDNs(g.after, s, i)
	return ok && i == len(s)+1
}

// matchRDNs matches pats against the RDNs of s from i on; it returns the
// index after the separator that follows the last RDN matched (len(s)+1
// when that RDN ends s). It reads s once, attribute by attribute.
func matchRDNs(pats []rdnPat, s string, i int) (int, bool) {
	for p := range pats {
		if i > len(s) {
			return i, false // s has fewer RDNs than the pattern
		}
		r := &pats[p]
		if r.any {
			i = dnNext(s, i, false) + 1
			continue
		}
		for k := range r.atvs {
			if i > len(s) {
				return i, false
			}
			eq, end, esc := scanATV(s, i)
			// the attribute ends where the pattern's does: "+" between
			// the attributes of one RDN, "," or the end after the last
			if last := k == len(r.atvs)-1; last != (end == len(s) || s[end] == ',') {
				return i, false
			}
			if eq < 0 || !r.atvs[k].match(s[i:eq], s[eq+1:end], esc) {
				return i, false
			}
			i = end + 1
		}
	}
	return i, true
}

// scanATV reads the attribute "type=value" at i: eq is the index of its
// "=" (-1 if none), end that of the unescaped "," or "+" after it (or
// len(s)), esc whether the value holds an escape.
func scanATV(s string, i int) (eq, end int, esc bool) {
	eq = -1
	for ; i < len(s); i++ {
		switch s[i] {
		case '=':
			if eq < 0 {
				eq = i
			}
		case '\\':
			esc = true
			i++
		case ',', '+':
			return eq, i, esc
		}
	}
	return eq, len(s), esc
}

// match matches one attribute of a DN: its type, and its value as Go
// escaped it (esc: it holds an escape).
func (a *atvPat) match(typ, v string, esc bool) bool {
	if !strings.EqualFold(typ, a.typ) {
		return false
	}
	if isHex := v != "" && v[0] == '#'; isHex != a.hex {
		return false
	} else if isHex {
		return strings.EqualFold(v[1:], a.parts[0])
	}
	parts := a.parts
	if len(parts) == 2 && parts[0] == "" && parts[1] == "" {
		return v != "" // a value of just "*"
	}
	if !esc {
		return matchParts(parts, v) // nothing escaped: v is the value
	}
	end, ok := dnPrefix(v, 0, parts[0])
	if !ok {
		return false
	}
	if len(parts) == 1 {
		return end == len(v)
	}
	i := end
	// middle parts: leftmost occurrence each
	for _, p := range parts[1 : len(parts)-1] {
		found := false
		for j := i; j <= len(v); j = dnSkip(v, j) {
			if e, ok := dnPrefix(v, j, p); ok {
				i, found = e, true
				break
			}
			if j == len(v) {
				break
			}
		}
		if !found {
			return false
		}
	}
	// the last part ends the value
	last := parts[len(parts)-1]
	for j := i; ; j = dnSkip(v, j) {
		if e, ok := dnPrefix(v, j, last); ok && e == len(v) {
			return true
		}
		if j >= len(v) {
			return false
		}
	}
}

// matchParts matches an unescaped value against the parts of a value
// pattern: the first is a prefix, the last a suffix, the others occur in
// order between them.
func matchParts(parts []string, v string) bool {
	first, last := parts[0], parts[len(parts)-1]
	if len(parts) == 1 {
		return v == first
	}
	if len(v) < len(first)+len(last) || v[:len(first)] != first || v[len(v)-len(last):] != last {
		return false
	}
	v = v[len(first) : len(v)-len(last)]
	for _, p := range parts[1 : len(parts)-1] {
		j := strings.Index(v, p)
		if j < 0 {
			return false
		}
		v = v[j+len(p):]
	}
	return true
}

// dnPrefix reports whether the decoded value v[i:] starts with lit, and
// the index in v after it.
func dnPrefix(v string, i int, lit string) (int, bool) {
	for k := 0; k < len(lit); k++ {
		if i >= len(v) {
			return i, false
		}
		c, next := dnByte(v, i)
		if c != lit[k] {
			return i, false
		}
		i = next
	}
	return i, true
}

// dnByte decodes the byte of an escaped value at i: "\2C" and "\," are
// ",", any other byte is itself.
func dnByte(v string, i int) (byte, int) {
	if v[i] == '\\' && i+1 < len(v) {
		if i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			return unhex(v[i+1])<<4 | unhex(v[i+2]), i + 3
		}
		return v[i+1], i + 2
	}
	return v[i], i + 1
}

// dnSkip returns the index of the decoded byte after the one at i.
func dnSkip(v string, i int) int {
	_, next := dnByte(v, i)
	return next
}
