package topology

import (
	"net"
	"slices"
	"strings"

	"github.com/trustline/trustline/modules/upstream"
)

// reverseProxy analyses a reverse_proxy handler: its upstreams, the
// transport's TLS (trust pool, client identity, skip-verify), and the
// identity headers it sends.
func (a *analyzer) reverseProxy(sc *serverCtx, h map[string]any, path string, when []string) *Outbound {
	out := &Outbound{Path: path, Handler: "reverse_proxy", When: when, Upstreams: []string{}}
	for _, u := range arr(h["upstreams"]) {
		if d := str(obj(u)["dial"]); d != "" {
			out.Upstreams = append(out.Upstreams, d)
		}
	}
	if dyn := obj(h["dynamic_upstreams"]); dyn != nil {
		out.Upstreams = append(out.Upstreams, "dynamic ("+str(dyn["source"])+")")
	}

	tp := field(path, "transport")
	transport := obj(h["transport"])
	protocol := str(transport["protocol"])
	if transport == nil {
		protocol = "http"
	}
	out.Transport = protocol
	switch protocol {
	case "http":
		a.upstreamTLS(out, obj(transport["tls"]), field(tp, "tls"))
		if pp := str(transport["proxy_protocol"]); pp != "" {
			out.ProxyProtocol = pp
			out.Notes = append(out.Notes, "sends PROXY protocol "+pp)
		}
	case "fastcgi":
		out.Mode = OutPlainHTTP
		out.Notes = append(out.Notes, "FastCGI")
	default:
		id := "http.reverse_proxy.transport." + protocol
		switch s := suiteModule(id, "protocol", transport).(type) {
		case *upstream.Transport:
			a.suiteTransport(out, s, tp)
		default:
			out.Mode = OutUnknown
			a.notAnalysed(tp, id, why(s, "transport not analysed"))
		}
	}

	a.identityHeaders(sc, out, obj(obj(h["headers"])["request"]), field(field(path, "headers"), "request"))

	if out.Mode == OutPlainHTTP && sc.inboundTLS {
		if allLoopback(out.Upstreams) {
			a.finding(SeverityInfo, KindPlaintextLeg, path,
				"TLS ends at Caddy and requests go on in plain HTTP to "+strings.Join(out.Upstreams, ", ")+" (loopback: the leg stays on this host)",
				"fine on one host; if the upstream moves off the host, re-encrypt: `reverse_proxy https://...` with `transport http { tls_trust_pool ... }`")
		} else {
			a.finding(SeverityWarning, KindPlaintextLeg, path,
				"TLS ends at Caddy and requests go on in plain HTTP to "+strings.Join(out.Upstreams, ", ")+": the internal leg can be read and altered, and the backend cannot tell Caddy from any other caller",
				"re-encrypt: `reverse_proxy https://backend` with `transport http { tls_trust_pool file internal-ca.pem }` (or the suite's `transport mtls` with a client_identity the backend verifies)")
		}
	}
	return out
}

// upstreamTLS reads Caddy's reverse_proxy TLS config (also used by the
// suite's mtls transport and by caddy-l4's proxy upstreams).
func (a *analyzer) upstreamTLS(out *Outbound, t map[string]any, path string) {
	if t == nil {
		if out.Mode == "" {
			out.Mode = OutPlainHTTP
		}
		return
	}
	out.Mode = OutTLS
	if boolean(t["insecure_skip_verify"]) {
		out.InsecureSkipVerify = true
		a.finding(SeverityError, KindInsecureSkipVerify, field(path, "insecure_skip_verify"),
			"the upstream's certificate is not verified (insecure_skip_verify): anyone on the path can impersonate "+strings.Join(out.Upstreams, ", ")+" and read the traffic",
			"trust the CA that issued the upstream's certificate instead: `tls_trust_pool file internal-ca.pem` (or `bundle`, `truststore`), and remove tls_insecure_skip_verify")
	}
	switch {
	case obj(t["ca"]) != nil:
		out.TrustPool = a.pool(obj(t["ca"]), field(path, "ca"))
	case len(strs(t["root_ca_pool"])) > 0:
		out.TrustPool = a.inlinePool(strs(t["root_ca_pool"]), "root_ca_pool", field(path, "root_ca_pool"))
	case len(strs(t["root_ca_pem_files"])) > 0:
		out.TrustPool = a.filePool(strs(t["root_ca_pem_files"]), field(path, "root_ca_pem_files"))
	}
	if out.TrustPool == nil && !out.InsecureSkipVerify {
		a.finding(SeverityInfo, KindUpstreamSystemRoot, path,
			"the upstream's certificate is verified against the system roots",
			"right for a public backend; for one with an internal CA, trust that CA explicitly: `tls_trust_pool file internal-ca.pem`")
	}
	if f := str(t["client_certificate_file"]); f != "" {
		c, _ := a.leafFile(RoleClient, f, false, field(path, "client_certificate_file"))
		a.keyFile(str(t["client_certificate_key_file"]), field(path, "client_certificate_key_file"))
		out.ClientCertificates = append(out.ClientCertificates, c.ID)
		out.ClientIdentity = "file " + expandPath(f)
		out.Mode = OutMTLS
	}
	if name := str(t["client_certificate_automate"]); name != "" {
		out.ClientIdentity = "managed by Caddy for " + name
		ids := a.liveServerCerts(name, "client_certificate_automate", a.policyFor(name), field(path, "client_certificate_automate"))
		if len(ids) == 0 {
			ids = []string{a.addUnread(RoleClient, "managed by Caddy for "+name, false, "managed by Caddy: see the running instance's report", field(path, "client_certificate_automate")).ID}
		}
		for _, id := range ids {
			a.rep.Certificate(id).Role = RoleClient
		}
		out.ClientCertificates = append(out.ClientCertificates, ids...)
		out.Mode = OutMTLS
	}
	out.ServerName = str(t["server_name"])
	if ports := strs(t["except_ports"]); len(ports) > 0 {
		out.Notes = append(out.Notes, "plain HTTP to ports "+strings.Join(ports, ", "))
	}
}

// suiteTransport reads the suite's mtls transport: Caddy's http transport
// plus a client identity from a keystore and pinned upstream identities.
func (a *analyzer) suiteTransport(out *Outbound, t *upstream.Transport, path string) {
	tlsCfg, ci := obj(generic(t.TLS)), obj(generic(t.ClientIdentityRaw))
	if tlsCfg == nil && (ci != nil || len(t.UpstreamIdentity) > 0) {
		tlsCfg = map[string]any{}
	}
	a.upstreamTLS(out, tlsCfg, field(path, "tls"))
	a.suiteIdentity(out, ci, t.UpstreamIdentity, field(path, "client_identity"))
}

// suiteIdentity records a live keystore client identity and pinned
// upstream identities (the mtls transport's, the passthrough handler's).
func (a *analyzer) suiteIdentity(out *Outbound, ci map[string]any, pins []string, path string) {
	if ci != nil {
		id, how := a.keystoreSource(RoleClient, ci, path)
		if id != "" {
			out.ClientCertificates = append(out.ClientCertificates, id)
		}
		out.ClientIdentity = "keystore " + how + " (live)"
		out.Mode = OutMTLS
	}
	out.UpstreamIdentity = pins
}

// allLoopback reports whether every upstream is on this host (loopback
// address, localhost, or a unix socket).
func allLoopback(upstreams []string) bool {
	return len(upstreams) > 0 && !slices.ContainsFunc(upstreams, func(u string) bool { return !isLoopback(u) })
}

func isLoopback(dial string) bool {
	if strings.HasPrefix(dial, "unix/") || strings.HasPrefix(dial, "unix+h2c/") {
		return true
	}
	if network, rest, ok := strings.Cut(dial, "/"); ok && !strings.ContainsAny(network, ".:[") {
		dial = rest
	}
	host, _, err := net.SplitHostPort(dial)
	if err != nil {
		host = dial
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// stripState is what the handler chain did to client-supplied request
// headers before a reverse_proxy: the delete patterns of earlier headers
// handlers (request_header -X), and the identity headers they set.
type stripState struct {
	deletes []string
	set     []string
	added   []string
	peerSet []string // set by peer_headers, which strips the names it sets
	peerAll []string // every header peer_headers sets, of a known family or not
}

func (s *stripState) clone() *stripState {
	return &stripState{deletes: slices.Clone(s.deletes), set: slices.Clone(s.set), added: slices.Clone(s.added),
		peerSet: slices.Clone(s.peerSet), peerAll: slices.Clone(s.peerAll)}
}

func (s *stripState) headersHandler(h map[string]any) {
	req := obj(h["request"])
	s.deletes = append(s.deletes, lower(strs(req["delete"]))...)
	s.set = append(s.set, identityNames(keys(obj(req["set"])))...)
	s.added = append(s.added, identityNames(keys(obj(req["add"])))...)
}

// identityFamilies are the request headers backends take as a client's
// certificate identity. A prefix family ends in '-'.
var identityFamilies = []string{
	"x-forwarded-client-cert", "client-cert", "client-cert-chain", "ssl-client-cert", "x-ssl-cert",
	"x-ssl-client-", "x-client-", "x-forwarded-tls-client-", "x-peer-",
}

// family returns the identity family a header belongs to, or "".
func family(name string) string {
	n := strings.ToLower(name)
	for _, f := range identityFamilies {
		if strings.HasSuffix(f, "-") && strings.HasPrefix(n, f) || n == f {
			return f
		}
	}
	return ""
}

// identityNames are the names of identity families among names.
func identityNames(names []string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return family(n) == "" })
}

func lower(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.ToLower(v)
	}
	return out
}

// deletes reports whether a delete pattern (Caddy's: exact, or with a
// leading and/or trailing *) removes every header of family fam (for a
// prefix family: only a pattern ending in * does), or the header name
// (for an exact one).
func deletes(pattern, fam string) bool {
	return (!strings.HasSuffix(fam, "-") || strings.HasSuffix(pattern, "*")) && deletesName(pattern, fam)
}

// identityHeaders finds client-identity headers sent upstream (set or
// added by this reverse_proxy's header_up, or by an earlier
// request_header) and checks that the client's own copies are stripped
// first, or a client can forge its identity.
func (a *analyzer) identityHeaders(sc *serverCtx, out *Outbound, req map[string]any, path string) {
	set := identityNames(keys(obj(req["set"])))
	added := identityNames(keys(obj(req["add"])))
	own := lower(strs(req["delete"]))
	set = append(set, sc.strip.set...)
	added = append(added, sc.strip.added...)
	all := append(slices.Clone(set), added...)
	out.IdentityHeaders = appendNew(appendNew(out.IdentityHeaders, all...), sc.strip.peerAll...)
	if len(all) == 0 {
		return
	}
	fix := "strip the client's copies before the proxy: " + stripHint(all) + " (a headers handler runs before reverse_proxy), or forward identity with the suite's peer forwarding handler, which strips them"
	for _, n := range all {
		fam := family(n)
		stripped := slices.ContainsFunc(sc.strip.deletes, func(p string) bool { return deletes(p, fam) })
		if slices.ContainsFunc(own, func(p string) bool { return deletes(p, fam) || deletesName(p, n) }) {
			a.finding(SeverityWarning, KindHeaderSetDeleted, path,
				"header_up sets "+n+" and also deletes it: Caddy applies header_up deletes after sets, so the upstream never receives it",
				"move the delete to "+stripHint([]string{n})+" (before reverse_proxy) and keep only the set in header_up")
			continue
		}
		if stripped {
			continue
		}
		switch {
		case slices.Contains(added, n):
			a.finding(SeverityError, KindIdentityHeaders, path,
				"identity header "+n+" is added to the request, after whatever the client sent in it: a client can send its own "+n+" and the upstream sees a forged identity",
				fix)
		case strings.HasSuffix(fam, "-") && slices.Contains(sc.strip.peerSet, n):
			a.finding(SeverityInfo, KindIdentityHeaders, path,
				"identity header "+n+" is set by the peer identity forwarding handler, which strips the client's copy of it and its strip list; other "+n[:len(fam)]+"* headers the client sends still pass through",
				"if the backend reads other "+n[:len(fam)]+"* headers, add them to forward_peer_identity's `strip`, or `request_header -"+n[:len(fam)]+"*` before it")
		case strings.HasSuffix(fam, "-"):
			a.finding(SeverityWarning, KindIdentityHeaders, path,
				"identity header "+n+" is set for the upstream, but the client's other "+n[:len(fam)]+"* headers pass through unstripped: a client can forge them",
				fix)
		}
	}
}

// deletesName reports whether a delete pattern removes header name n.
func deletesName(pattern, n string) bool {
	n = strings.ToLower(n)
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*") && strings.HasSuffix(pattern, "*") && len(pattern) >= 2:
		return strings.Contains(n, pattern[1:len(pattern)-1])
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(n, pattern[:len(pattern)-1])
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(n, pattern[1:])
	}
	return pattern == n
}

// stripHint is the request_header directives that strip the families of
// names.
func stripHint(names []string) string {
	var hints []string
	for _, n := range names {
		fam := family(n)
		h := n
		if strings.HasSuffix(fam, "-") {
			h = n[:len(fam)] + "*"
		}
		hints = appendNew(hints, "`request_header -"+h+"`")
	}
	return strings.Join(hints, " and ")
}
