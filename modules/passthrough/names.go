package passthrough

import (
	"fmt"
	"net/netip"
	"strings"
)

// nameSet matches server names against SNI patterns: exact names and
// wildcards of one leftmost label ("*.example.com" matches
// "a.example.com", not "example.com" nor "a.b.example.com"), as Caddy's
// site addresses and certificates do. Matching ignores ASCII case.
type nameSet struct {
	exact     map[string]struct{}
	wildcards map[string]struct{} // the part after "*", e.g. ".example.com"
}

// normalizeName validates one SNI pattern and returns it lowercased.
func normalizeName(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty server name")
	}
	lower := strings.ToLower(p)
	if lower == "*" {
		return "", fmt.Errorf("invalid wildcard %q: a lone * is not a server name (use `default` for everything else)", p)
	}
	if strings.HasSuffix(lower, ".") {
		return "", fmt.Errorf("server name %q: remove the trailing dot (clients send names without it)", p)
	}
	if _, err := netip.ParseAddr(strings.Trim(lower, "[]")); err == nil {
		return "", fmt.Errorf("server name %q: clients never send an IP address as SNI", p)
	}
	host := lower
	if rest, ok := strings.CutPrefix(lower, "*."); ok {
		host = rest
	}
	if strings.Contains(host, "*") {
		return "", fmt.Errorf("invalid wildcard %q: only a whole leftmost label may be *, as in *.example.com", p)
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" {
			return "", fmt.Errorf("server name %q has an empty label", p)
		}
		if len(label) > 63 {
			return "", fmt.Errorf("server name %q has a label over 63 characters", p)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 0x80:
				return "", fmt.Errorf("server name %q: write internationalized names in their punycode (xn--) form", p)
			default:
				return "", fmt.Errorf("server name %q: character %q is not allowed in a host name", p, c)
			}
		}
	}
	if len(lower) > 253 {
		return "", fmt.Errorf("server name %q is over 253 characters", p)
	}
	return lower, nil
}

// newNameSet validates patterns and builds the set. Duplicates (ignoring
// case) are an error.
func newNameSet(patterns []string) (*nameSet, error) {
	s := &nameSet{exact: map[string]struct{}{}, wildcards: map[string]struct{}{}}
	for _, p := range patterns {
		n, err := normalizeName(p)
		if err != nil {
			return nil, err
		}
		key, set := n, s.exact
		if rest, ok := strings.CutPrefix(n, "*"); ok {
			key, set = rest, s.wildcards
		}
		if _, dup := set[key]; dup {
			return nil, fmt.Errorf("duplicate server name %q", p)
		}
		set[key] = struct{}{}
	}
	return s, nil
}

// match reports whether name, as sent by a client, is in the set.
func (s *nameSet) match(name string) bool {
	name = canonicalName(name)
	if _, ok := s.exact[name]; ok {
		return true
	}
	if len(s.wildcards) == 0 {
		return false
	}
	i := strings.IndexByte(name, '.')
	if i <= 0 {
		return false
	}
	_, ok := s.wildcards[name[i:]]
	return ok
}

// overlaps reports whether a normalized pattern and a site address's
// host (a name or a wildcard, lowercase) can take the same server name.
func overlaps(pattern, host string) bool {
	return matchPattern(pattern, host) || (strings.HasPrefix(host, "*.") && matchPattern(host, strings.TrimPrefix(pattern, "*.")))
}

// matchPattern reports whether name matches one normalized pattern.
func matchPattern(pattern, name string) bool {
	name = canonicalName(name)
	if rest, ok := strings.CutPrefix(pattern, "*"); ok {
		i := strings.IndexByte(name, '.')
		return i > 0 && name[i:] == rest
	}
	return name == pattern
}

// canonicalName is the form in which a server name a client sent is
// compared with patterns: ASCII lowercase, without the one trailing dot
// of a fully qualified name ("Admin.Internal." is "admin.internal"). RFC
// 6066 forbids that dot in SNI, but clients send it, and a name matched
// differently with and without it would slip past its route (a
// `refuse`, say). The ClientHello reader stores names in this form.
func canonicalName(name string) string {
	return lowerASCII(strings.TrimSuffix(name, "."))
}

// lowerASCII lowercases ASCII letters, without allocating when there are
// none to change.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
