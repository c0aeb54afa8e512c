package topology

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// LocateCaddyfile points each finding of a report of cfg (the JSON that
// Caddy's caddyfile adapter made of body, read from filename) to the
// Caddyfile line it comes from: Finding.Location, "file:line" (an
// imported file's own name and line for what it holds).
//
// The JSON keeps no source positions, so the line is found from the
// finding's config path: the site block of the route's hosts (or the
// connection policy's SNI names) and ports, then inside it the directive
// each step of the path comes from, told apart by the values they carry.
// A step it cannot place leaves the line of the last one it could; a
// finding it cannot place at all keeps its JSON path only.
func (r *Report) LocateCaddyfile(cfg []byte, filename string, body []byte) error {
	blocks, err := caddyfile.Parse(filename, body)
	if err != nil {
		return fmt.Errorf("reading %s: %w", filename, err)
	}
	root, err := decodeConfig(cfg)
	if err != nil {
		return err
	}
	l := &locator{root: root}
	l.httpPort, l.httpsPort = httpPorts(obj(obj(obj(root)["apps"])["http"]))
	for _, b := range blocks {
		if b.IsNamedRoute {
			continue
		}
		lb := &locBlock{keys: b.Keys}
		for _, seg := range b.Segments {
			lb.tokens = append(lb.tokens, seg...)
		}
		l.all = append(l.all, lb) // the global options, without keys, come first
		if len(b.Keys) > 0 {
			l.sites = append(l.sites, lb)
		}
	}
	for i := range r.Findings {
		if tok, ok := l.locate(r.Findings[i].Path, r.Findings[i].Message); ok {
			r.Findings[i].Location = tok.File + ":" + strconv.Itoa(tok.Line)
		}
	}
	return nil
}

// locator finds the Caddyfile token a config path comes from.
type locator struct {
	root                any
	all, sites          []*locBlock
	httpPort, httpsPort int
}

// locBlock is a server block: its addresses and its tokens in order.
type locBlock struct {
	keys   []caddyfile.Token
	tokens []caddyfile.Token
}

// step is one element of a config path: a key and, for an array, the
// index (-1 otherwise), with the JSON value it leads to.
type step struct {
	key   string
	index int
	node  any
}

// steps splits a config path ("apps.http.servers.srv0.routes[0]") and
// walks the config along it; it stops where the config does not follow.
func (l *locator) steps(path string) []step {
	var out []step
	cur := l.root
	for _, part := range strings.Split(path, ".") {
		key, rest, _ := strings.Cut(part, "[")
		cur = obj(cur)[key]
		s := step{key: key, index: -1, node: cur}
		for rest != "" {
			n, after, ok := strings.Cut(rest, "]")
			i, err := strconv.Atoi(n)
			if !ok || err != nil || i < 0 || i >= len(arr(cur)) {
				return out
			}
			cur = arr(cur)[i]
			s.index, s.node = i, cur
			rest = strings.TrimPrefix(after, "[")
		}
		if s.node == nil {
			return out
		}
		out = append(out, s)
	}
	return out
}

// locate finds the token that the config at path comes from; the words of
// msg (the finding's message) tell apart directives its config does not.
func (l *locator) locate(path, msg string) (caddyfile.Token, bool) {
	steps := l.steps(path)
	if len(steps) < 2 || steps[0].key != "apps" {
		return caddyfile.Token{}, false
	}
	blocks, from := l.blocksFor(steps)
	best, bestDepth, bestScore := caddyfile.Token{}, -1, -1
	for _, b := range blocks {
		tok, depth, score := b.walk(steps[from:], strings.ToLower(msg))
		if depth > bestDepth || depth == bestDepth && score > bestScore {
			best, bestDepth, bestScore = tok, depth, score
		}
	}
	return best, bestDepth >= 0
}

// blocksFor returns the server blocks the config at steps may come from,
// and the index of the first step to look for inside them. An HTTP
// server's route comes from the site blocks of its hosts and ports; a TLS
// connection policy from those of its SNI names; the rest of the http app
// from the server's site blocks; other apps from the global options or any
// block.
func (l *locator) blocksFor(steps []step) ([]*locBlock, int) {
	all := l.all
	if len(steps) < 4 || steps[1].key != "http" || steps[2].key != "servers" {
		return all, 1
	}
	var ports []int
	for _, a := range strs(obj(steps[3].node)["listen"]) {
		ports = append(ports, portOf(a))
	}
	onServer := l.siteBlocks(ports, nil)
	if len(steps) > 4 {
		switch s := steps[4]; s.key {
		case "routes":
			hosts := orElse(topHosts([]any{s.node}), "")
			return firstNonEmpty(l.siteBlocks(ports, hosts), onServer, all), 5
		case "tls_connection_policies":
			if hosts := strs(obj(obj(s.node)["match"])["sni"]); len(hosts) > 0 {
				return firstNonEmpty(l.siteBlocks(ports, hosts), onServer, all), 4
			}
		}
	}
	return firstNonEmpty(onServer, all), 4
}

// siteBlocks returns the site blocks with an address on one of ports
// and, unless hosts is nil, for one of hosts ("" for an address without
// a host).
func (l *locator) siteBlocks(ports []int, hosts []string) []*locBlock {
	var out []*locBlock
	for _, b := range l.sites {
		for _, k := range b.keys {
			addr, err := httpcaddyfile.ParseAddress(k.Text)
			if err != nil {
				continue
			}
			port, err := strconv.Atoi(addr.Port)
			if err != nil {
				port = l.httpsPort
				if addr.Scheme == "http" {
					port = l.httpPort
				}
			}
			if slices.Contains(ports, port) && (hosts == nil || slices.ContainsFunc(hosts, func(h string) bool { return strings.EqualFold(h, addr.Host) })) {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

func firstNonEmpty(lists ...[]*locBlock) []*locBlock {
	for _, l := range lists {
		if len(l) > 0 {
			return l
		}
	}
	return nil
}

// walk follows steps inside the block: each step narrows the tokens to
// the directive (and its block) it comes from, when the step has one and
// the block holds it. It returns the deepest token found (the block's
// first address when none), how many steps were placed and how well the
// last one matched the values of its config.
func (b *locBlock) walk(steps []step, msg string) (caddyfile.Token, int, int) {
	var found *caddyfile.Token
	if len(b.keys) > 0 {
		found = &b.keys[0]
	}
	lo, hi := 0, len(b.tokens)
	depth, score := 0, 0
	parent, prev := "", ""
	for _, s := range steps {
		i, sc := -1, 0
		switch words := caddyfileWords(s, parent); {
		case prev == "servers":
			// a server of a layer-4 app: by its listen address
			i, sc = b.best(lo, hi, nil, strs(obj(s.node)["listen"]), msg)
		case s.key == "routes":
			// a handle or route block, when one holds the route's values
			// (its matcher's path or names, its upstreams); routes of
			// plain directives have none
			if i, sc = b.best(lo, hi, words, leaves(s.node), msg); sc <= 0 {
				i = -1
			}
		case len(words) > 0:
			i, sc = b.best(lo, hi, words, leaves(s.node), msg)
			if i < 0 && s.key == "handle" {
				// a handler with no directive of its own (a passthrough
				// route): by the values it carries
				i, sc = b.best(lo, hi, nil, leaves(s.node), msg)
			}
		}
		if h := str(obj(s.node)["handler"]); h != "" {
			parent = h
		}
		prev = s.key
		if i < 0 {
			continue
		}
		found = &b.tokens[i]
		lo, hi = i+1, b.extent(i)
		depth++
		score = sc
	}
	if found == nil {
		return caddyfile.Token{}, -1, 0
	}
	return *found, depth, score
}

// best returns the token in [lo, hi) that is one of words (or, with no
// words, a value of the config) whose directive holds most of values;
// between equals, the one whose arguments msg names (a header name, a
// file), then the first.
func (b *locBlock) best(lo, hi int, words, values []string, msg string) (int, int) {
	best, bestScore, bestNamed := -1, -1, -1
	for i := lo; i < hi; i++ {
		t := b.tokens[i].Text
		if len(words) > 0 && !slices.Contains(words, t) || len(words) == 0 && !slices.Contains(values, t) {
			continue
		}
		score, named := 0, 0
		for _, tok := range b.tokens[i:b.extent(i)] {
			for _, v := range values {
				if strings.Contains(tok.Text, v) {
					score++
				}
			}
			if arg := strings.ToLower(strings.TrimLeft(tok.Text, "+-")); len(arg) >= 3 && tok.Text != t && strings.Contains(msg, arg) {
				named++
			}
		}
		if score > bestScore || score == bestScore && named > bestNamed {
			best, bestScore, bestNamed = i, score, named
		}
	}
	return best, bestScore
}

// extent is the end of the directive at token i: the end of its line, or
// of the block that line opens.
func (b *locBlock) extent(i int) int {
	t := b.tokens[i]
	j := i
	for j+1 < len(b.tokens) && b.tokens[j+1].Line == t.Line && b.tokens[j+1].File == t.File {
		j++
	}
	if b.tokens[j].Text != "{" {
		return j + 1
	}
	nesting := 0
	for ; j < len(b.tokens); j++ {
		switch b.tokens[j].Text {
		case "{":
			nesting++
		case "}":
			nesting--
			if nesting == 0 {
				return j + 1
			}
		}
	}
	return len(b.tokens)
}

// leaves returns the short string values of a config node (its own and
// those a few levels down): what tells two directives of the same name
// apart.
func leaves(v any) []string {
	var out []string
	var walk func(v any, depth int)
	walk = func(v any, depth int) {
		if depth > 6 || len(out) >= 32 {
			return
		}
		switch x := v.(type) {
		case string:
			if len(x) >= 3 && !slices.Contains(out, x) {
				out = append(out, x)
			}
			// an upstream's host:port is written https://host in a
			// Caddyfile
			if host, _, err := net.SplitHostPort(x); err == nil && len(host) >= 3 && !slices.Contains(out, host) {
				out = append(out, host)
			}
		case []any:
			for _, e := range x {
				walk(e, depth+1)
			}
		case map[string]any:
			for _, k := range keys(x) {
				if !slices.Contains([]string{"handler", "provider", "protocol", "verifier"}, k) {
					walk(x[k], depth+1)
				}
			}
		}
	}
	walk(v, 0)
	return out
}

// handlerWords are the directives an HTTP handler comes from, where they
// are not its name (none: a subroute).
var handlerWords = map[string][]string{
	"":                nil,
	"subroute":        nil,
	"peer_headers":    {"forward_peer_identity"},
	"headers":         {"request_header", "header"},
	"static_response": {"respond", "redir", "error"},
	"authentication":  {"basic_auth", "basicauth", "forward_auth"},
}

// keyWords are the directives and subdirectives a config key comes from,
// where they are not the key itself (none: the step is placed by its
// values, a listen address, an upstream, a file name, or not at all).
var keyWords = map[string][]string{
	"routes":                      {"handle", "handle_path", "route", "handle_errors"},
	"servers":                     nil,
	"apps":                        nil,
	"certificates":                nil,
	"tls":                         nil,
	"request":                     nil,
	"revocation":                  nil,
	"policies":                    nil,
	"automation":                  nil,
	"listen":                      nil,
	"transport":                   {"transport"},
	"insecure_skip_verify":        {"tls_insecure_skip_verify", "insecure_skip_verify"},
	"client_certificate_file":     {"tls_client_auth"},
	"client_certificate_key_file": {"tls_client_auth"},
	"client_certificate_automate": {"tls_client_auth"},
	"ca":                          {"tls_trust_pool", "trust_pool", "tls_trusted_ca_certs"},
	"root_ca_pem_files":           {"tls_trust_pool", "trust_pool", "tls_trusted_ca_certs"},
	"root_ca_pool":                {"tls_trust_pool", "trust_pool", "tls_trusted_ca_certs"},
	"tls_connection_policies":     {"tls"},
	"load_files":                  {"tls"},
	"load_pem":                    {"tls"},
	"load_folders":                {"tls"},
	"client_authentication":       {"client_auth"},
	"verifiers":                   {"verifier"},
	"crl_files":                   {"crl"},
	"trusted_ca_certs_pem_files":  {"trust_pool", "trusted_ca_cert_file", "trusted_ca_cert"},
	"trusted_ca_certs":            {"trust_pool", "trusted_ca_cert_file", "trusted_ca_cert"},
}

// caddyfileWords are the Caddyfile directives and subdirectives a config
// step comes from (parent: the handler it is in); none means the step is
// placed by its values or not at all.
func caddyfileWords(s step, parent string) []string {
	if s.key == "handle" {
		h := str(obj(s.node)["handler"])
		if w, ok := handlerWords[h]; ok {
			return w
		}
		return []string{h}
	}
	if s.key == "headers" && parent == "reverse_proxy" {
		return []string{"header_up"}
	}
	if w, ok := keyWords[s.key]; ok {
		return w
	}
	// a scalar option (its Caddyfile name is most often its JSON key), or
	// an object not in an array
	if obj(s.node) == nil && arr(s.node) == nil || s.index < 0 {
		return []string{s.key}
	}
	return nil
}
