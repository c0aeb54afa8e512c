package peer

import (
	"errors"
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
