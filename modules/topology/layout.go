package topology

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The picture of a report: build makes the boxes with their text and the
// legs, attach puts each finding and module not analysed on the box it
// concerns, place gives the boxes their positions in columns (clients,
// listeners framing their routes, upstreams); svg.go writes it. Every step
// walks the report in order and measures text in characters of a
// monospace font, so a report always gives the same bytes.

// Geometry, in SVG user units (pixels at 100%).
const (
	fontSize  = 11.0
	charW     = 6.7 // advance of one character of the monospace font, rounded up
	lineH     = 14.0
	padX      = 8.0
	padY      = 8.0
	margin    = 16.0
	clientX   = margin
	clientW   = 130.0
	clientH   = 44.0
	listenerX = 300.0
	listenerW = 450.0
	routeX    = listenerX + 14
	routeW    = listenerW - 28
	upX       = listenerX + listenerW + 200
	upW       = 420.0
	picW      = upX + upW + margin
	rowGap    = 14.0
	upGap     = 22.0
	lblChars  = 27 // characters per line of an outbound leg's label
	lblLines  = 3
	// characters per line in a listener frame, a route box, an
	// upstream box
	frameChars = 62
	routeChars = 60
	upChars    = 60
)

// span is a run of text with a CSS class.
type span struct{ text, class string }

// line is one line of text in a box.
type line struct {
	spans  []span
	indent int
}

// block is a group of lines with data attributes (a certificate, a pool).
type block struct {
	attrs []attr
	lines []line
}

// attr is one attribute of an SVG element.
type attr struct{ k, v string }

// box is a rectangle with text: a listener frame, a client, a route, an
// upstream.
type box struct {
	id, class string
	// paths are the config paths the box stands for, its own first (then
	// a route's client_authentication, its pools), for attaching findings
	paths  []string
	attrs  []attr
	blocks []block
	chars  int      // characters per line
	certs  []string // the IDs of the certificates drawn in the box

	x, y, w, h float64
	findings   []int // indexes into Report.Findings
	notAn      []int // indexes into Report.NotAnalysed
}

// leg is an edge: the inbound leg from a client node to a route, or an
// outbound leg from a route to an upstream box.
type leg struct {
	class    string
	attrs    []attr
	label    []string
	from, to *box
}

// picListener is a listener frame with its routes.
type picListener struct {
	l      *Listener
	frame  *box
	client *box
	routes []*picRoute
	boxes  []*box // its boxes in drawing order: frame, client, routes and their upstreams
	legs   []*leg // inbound and outbound, in drawing order
}

// picRoute is a route box with its upstream boxes.
type picRoute struct {
	box *box
	ups []*box
}

// picture is a laid-out report.
type picture struct {
	rep       *Report
	now       time.Time
	window    time.Duration
	listeners []*picListener
	boxes     []*box // every box, in drawing order
	height    float64
}

// newBox makes a box of chars characters per line, drawn in that order.
func (p *picture) newBox(id, class, path string, chars int, attrs ...attr) *box {
	b := &box{id: id, class: class, chars: chars, attrs: attrs}
	if path != "" {
		b.paths = []string{path}
	}
	p.boxes = append(p.boxes, b)
	return b
}

// lines wraps text to the box's width; continuation lines are indented by
// indent characters.
func (b *box) lines(text, class string, indent int) []line {
	return textLines(text, class, b.chars, indent)
}

// list wraps each item after prefix, continuation lines indented by 2.
func (b *box) list(prefix string, items []string, class string) []line {
	var out []line
	for _, it := range items {
		out = append(out, b.lines(prefix+it, class, 2)...)
	}
	return out
}

// add appends a block of lines with its attributes. A block without
// attributes draws only its lines, so consecutive ones draw as one.
func (b *box) add(lines []line, attrs ...attr) {
	b.blocks = append(b.blocks, block{attrs: attrs, lines: lines})
}

// text appends text, wrapped, as a block.
func (b *box) text(text, class string, indent int) { b.add(b.lines(text, class, indent)) }

// expiryClass colours a time limit: expired past it, soon within window
// of it.
func (p *picture) expiryClass(na time.Time, window time.Duration) (class, text string) {
	left := na.Sub(p.now)
	switch {
	case left <= 0:
		return "exp-expired", "expired " + days(-left) + " ago"
	case left <= window:
		return "exp-soon", days(left) + " left"
	}
	return "exp-ok", days(left) + " left"
}

// legStyles are the class and the label of a leg by its mode (inbound,
// and outbound TLS and mTLS, whose modes have the same names).
var legStyles = map[string]struct{ class, label string }{
	ModePlainHTTP:   {"leg-plain", "plain HTTP"},
	ModeTLS:         {"leg-tls", "TLS"},
	ModeMTLS:        {"leg-mtls", "mTLS"},
	ModePassthrough: {"leg-pass", "TLS (passed)"},
	ModeRefused:     {"leg-refused", "refused"},
	ModeTCP:         {"leg-plain", "raw TCP"},
}

// build makes the boxes and legs of a report.
func build(rep *Report, now time.Time, window time.Duration) *picture {
	p := &picture{rep: rep, now: now, window: window}
	for i, l := range rep.Listeners {
		lid := "l" + strconv.Itoa(i)
		pl := &picListener{l: l}
		first := len(p.boxes)
		pl.frame = p.newBox(lid, "listener", l.Path, frameChars,
			attr{"data-listener", l.Address}, attr{"data-app", l.App}, attr{"data-inbound", l.Inbound}, attr{"data-path", l.Path})
		pl.frame.text(l.App+" "+l.Server+" "+l.Address+" · "+listenerMode(l), "title", 0)
		pl.frame.add(pl.frame.list("- ", l.Notes, "note"))
		if len(l.Routes) == 0 {
			pl.frame.text("no routes", "note", 0)
		}
		who := "clients"
		if len(l.TrustedProxies) > 0 {
			who = "load balancer"
		}
		pl.client = p.newBox(lid+"c", "client", "", frameChars)
		pl.client.text(who, "title", 0)
		for j, rt := range l.Routes {
			pl.routes = append(pl.routes, p.buildRoute(pl, lid+"r"+strconv.Itoa(j), rt))
		}
		pl.boxes = p.boxes[first:]
		p.listeners = append(p.listeners, pl)
	}
	return p
}

// buildRoute makes a route box (the TLS end of the inbound leg), its
// inbound leg and its outbound legs with their upstream boxes.
func (p *picture) buildRoute(pl *picListener, id string, rt *Route) *picRoute {
	in := rt.Inbound
	b := p.newBox(id, "route", rt.Path, routeChars, attr{"data-route", rt.Path}, attr{"data-mode", in.Mode})
	pr := &picRoute{box: b}
	b.text(cmp.Or(strings.Join(rt.Hosts, ", "), "any host"), "title", 0)
	if len(rt.Match) > 0 {
		b.text("match: "+strings.Join(rt.Match, "; "), "note", 0)
	}
	switch in.Mode {
	case ModePlainHTTP:
		b.text("plain HTTP in: TLS, if any, ended before Caddy", "", 2)
	case ModeTLS, ModeMTLS:
		b.text(legStyles[in.Mode].label+" ends here; Caddy is the TLS server", "strong", 2)
		b.text("certificate: "+in.Certificate, "", 2)
	case ModePassthrough:
		if len(in.PassthroughTo) > 0 {
			b.text("TLS passed through, not decrypted: the upstream is the TLS server", "strong", 2)
		} else {
			b.text("TLS ClientHello read; not passed on", "", 2)
		}
	case ModeRefused:
		b.text("refused with TLS alert "+in.Refusal, "strong", 2)
	case ModeTCP:
		b.text("raw TCP (TLS, if any, passes through)", "", 2)
	}
	for _, c := range in.Certificates {
		p.certBlock(b, c)
	}
	if ca := in.ClientAuth; ca != nil {
		cl := b.lines("client certificates: mode "+ca.Mode+"; "+ca.Verified, "", 2)
		for _, v := range ca.Verifiers {
			class := ""
			if strings.Contains(v, "not analysed") {
				class = "na"
			}
			cl = append(cl, b.lines("verifier "+v, class, 2)...)
		}
		b.add(append(cl, b.list("identity must match: ", ca.Patterns, "")...), attr{"data-client-auth", ca.Mode})
		b.paths = append(b.paths, ca.Path)
		for _, c := range ca.CRLs {
			p.crlBlock(b, c)
		}
		for _, pool := range ca.Pools {
			b.paths = append(b.paths, pool.Path)
			p.poolBlock(b, pool, "clients verified against")
		}
	}
	if len(in.PeerPatterns) > 0 {
		b.add(b.list("peer identity must match: ", in.PeerPatterns, ""), attr{"data-identity-patterns", strconv.Itoa(len(in.PeerPatterns))})
	}
	if len(rt.Outbound) == 0 && len(rt.Handlers) > 0 && in.Mode != ModePassthrough && in.Mode != ModeRefused {
		b.text("handled by Caddy: "+strings.Join(rt.Handlers, ", "), "note", 0)
	}

	style := legStyles[in.Mode]
	pl.legs = append(pl.legs, &leg{class: style.class, from: pl.client, to: b, label: []string{style.label},
		attrs: []attr{{"data-leg", rt.Path}, {"data-direction", "in"}, {"data-kind", in.Mode}, {"data-listener", pl.l.Address}}})
	for k, o := range rt.Outbound {
		up, lg := p.buildOutbound(id+"o"+strconv.Itoa(k), rt, o, b)
		pr.ups = append(pr.ups, up)
		pl.legs = append(pl.legs, lg)
	}
	return pr
}

// buildOutbound makes an upstream box (the TLS end of the outbound leg,
// as Caddy sees it) and the leg to it.
func (p *picture) buildOutbound(id string, rt *Route, o *Outbound, from *box) (*box, *leg) {
	up := p.newBox(id, "upstream", o.Path, upChars, attr{"data-upstream", strings.Join(o.Upstreams, " ")}, attr{"data-path", o.Path})
	up.text(cmp.Or(strings.Join(o.Upstreams, ", "), "(no upstream)"), "title", 0)
	sub := o.Handler
	if o.Transport != "" && o.Transport != "http" {
		sub += " · transport " + o.Transport
	}
	if len(o.When) > 0 {
		sub += " · when " + strings.Join(o.When, ", ")
	}
	up.text(sub, "note", 0)

	afterTermination := rt.Inbound.Mode == ModeTLS || rt.Inbound.Mode == ModeMTLS
	class, label := "leg-plain", []string{}
	switch o.Mode {
	case OutPlainHTTP:
		label = append(label, "plain HTTP")
		if afterTermination {
			class = "leg-plain-warn"
			up.text("plaintext after TLS termination", "warn", 2)
		}
	case OutTCP:
		switch {
		case afterTermination:
			class = "leg-plain-warn"
			label = append(label, "raw TCP, decrypted")
			up.text("plaintext after TLS termination", "warn", 2)
		case rt.Inbound.Mode == ModePassthrough:
			class = "leg-pass"
			label = append(label, "TLS passed through")
			if len(rt.Hosts) > 0 {
				label = append(label, "SNI "+strings.Join(rt.Hosts, ", "))
			}
			up.text("TLS server: this upstream (Caddy does not decrypt)", "strong", 2)
		default:
			label = append(label, "raw TCP")
		}
	case OutTLS, OutMTLS:
		class, label = legStyles[o.Mode].class, []string{legStyles[o.Mode].label}
		if o.Handler != "reverse_proxy" {
			label = append(label, "re-encrypted at layer 4")
		} else if afterTermination {
			label[0] += ", re-encrypted"
		}
		up.text("TLS server: this upstream; Caddy is the client", "strong", 2)
		if o.InsecureSkipVerify {
			up.text("its certificate is NOT verified (insecure_skip_verify)", "bad", 2)
		}
		if o.ServerName != "" {
			up.text("server name: "+o.ServerName, "", 2)
		}
		up.add(up.list("upstream identity must be: ", o.UpstreamIdentity, ""))
	case OutUnknown:
		class = "leg-unknown"
		label = append(label, "not analysed")
		up.text("transport "+o.Transport+" not analysed: what this leg does to TLS is not known", "na", 2)
	}
	if o.ProxyProtocol != "" {
		pp := "PROXY " + o.ProxyProtocol
		if o.IdentityTLVs {
			pp += " + identity TLVs"
		}
		label = append(label, pp)
	}
	if (o.Mode == OutTLS || o.Mode == OutMTLS) && (!o.InsecureSkipVerify || o.TrustPool != nil) {
		p.poolBlock(up, o.TrustPool, "upstream verified against")
	}
	if o.ClientIdentity != "" {
		up.add(up.lines("Caddy presents: "+o.ClientIdentity, "", 2), attr{"data-client-identity", "true"})
		for _, c := range o.ClientCertificates {
			p.certBlock(up, c)
		}
	}
	if len(o.IdentityHeaders) > 0 {
		stripped := p.headersStripped(o)
		state, cls := "client copies stripped", ""
		if !stripped {
			state, cls = "client copies NOT all stripped", "warn"
		}
		up.add(append(up.lines("identity headers set: "+strings.Join(o.IdentityHeaders, ", "), "", 2), up.lines(state, cls, 2)...),
			attr{"data-identity-headers", strings.Join(o.IdentityHeaders, ",")}, attr{"data-stripped", strconv.FormatBool(stripped)})
	}
	up.add(up.list("- ", o.Notes, "note"))
	for i := range label {
		label[i] = clip(label[i], lblChars)
	}
	lg := &leg{class: class, from: from, to: up, label: label[:min(len(label), lblLines)],
		attrs: []attr{{"data-leg", o.Path}, {"data-direction", "out"}, {"data-kind", o.Mode},
			{"data-after-termination", strconv.FormatBool(afterTermination)}}}
	if o.ProxyProtocol != "" {
		lg.attrs = append(lg.attrs, attr{"data-proxy-protocol", o.ProxyProtocol}, attr{"data-identity-tlvs", strconv.FormatBool(o.IdentityTLVs)})
	}
	return up, lg
}

// headersStripped: no identity_headers_not_stripped finding of warning or
// error severity concerns the leg (info means the suite's handler strips
// what it sets).
func (p *picture) headersStripped(o *Outbound) bool {
	return !slices.ContainsFunc(p.rep.Findings, func(f Finding) bool {
		return f.Kind == KindIdentityHeaders && f.Severity.Rank() >= SeverityWarning.Rank() && under(f.Path, o.Path)
	})
}

// certBlock adds a certificate to a box: subject, issuer, not-after and
// days left, coloured by the expiry thresholds.
func (p *picture) certBlock(b *box, id string) {
	c := p.rep.Certificate(id)
	if c == nil {
		return
	}
	b.certs = append(b.certs, id)
	subject := cmp.Or(c.Subject, strings.Join(c.Names, ", "), c.Source)
	role := map[string]string{RoleServer: "server cert", RoleClient: "client cert", RoleTrustAnchor: "CA"}[c.Role]
	lines := []line{{indent: 2, spans: []span{{c.ID + " ", "id"}, {clip(role+" "+subject, b.chars-len(c.ID)-3), "strong"}}}}
	if c.Issuer != "" && c.Issuer != c.Subject {
		lines = append(lines, line{indent: 4, spans: []span{{clip("issuer "+c.Issuer, b.chars-4), ""}}})
	}
	at := []attr{{"data-cert", c.ID}, {"data-role", c.Role}}
	if c.NotAfter == nil {
		b.add(append(lines, notReadLines(c.NotRead, b.chars)...), append(at, expiryAttr("unknown"))...)
		return
	}
	cls, left := p.expiryClass(*c.NotAfter, p.window)
	if c.RenewBy != nil && cls != "exp-expired" {
		// Caddy renews it: orange only once its renewal is overdue
		cls = "exp-ok"
		if !p.now.Before(*c.RenewBy) {
			cls = "exp-soon"
		}
	}
	b.add(append(lines, dated("not after "+c.NotAfter.UTC().Format(time.DateOnly), cls, left)), append(at, expiryAttr(cls))...)
}

// crlBlock adds a CRL in force: its file, issuer and next update with the
// time left, coloured like a certificate's expiry (orange within
// crlExpiringWindow of its next update, red past it).
func (p *picture) crlBlock(b *box, c *CRL) {
	lines := []line{{indent: 2, spans: []span{{clip("CRL "+c.File, b.chars-2), "strong"}}}}
	cls := "unknown"
	switch {
	case c.NotRead != "":
		lines = append(lines, notReadLines(c.NotRead, b.chars)...)
	case c.NextUpdate == nil:
		lines = append(lines, c.issuerLine(b.chars), line{indent: 4, spans: []span{{"no next update", "na"}}})
	default:
		var left string
		cls, left = p.expiryClass(*c.NextUpdate, crlExpiringWindow)
		lines = append(lines, c.issuerLine(b.chars), dated("next update "+c.NextUpdate.Format(crlTime), cls, left))
	}
	b.add(lines, attr{"data-crl", c.File}, attr{"data-path", c.Path}, expiryAttr(cls))
}

func (c *CRL) issuerLine(width int) line {
	return line{indent: 4, spans: []span{{clip("issuer "+c.Issuer+", "+strconv.Itoa(c.Revoked)+" revoked", width-4), ""}}}
}

// notReadLines say why a certificate or a CRL was not read.
func notReadLines(reason string, width int) []line {
	lines := textLines("not read: "+reason, "na", width-4, 2)
	for i := range lines {
		lines[i].indent += 4
	}
	return lines
}

// dated is the line of a time limit, the time left coloured by class.
func dated(what, class, left string) line {
	return line{indent: 4, spans: []span{{what + " ", ""}, {"(" + left + ")", class}}}
}

// expiryAttr is the data-expiry of an expiry class ("exp-soon": "soon").
func expiryAttr(class string) attr { return attr{"data-expiry", strings.TrimPrefix(class, "exp-")} }

// poolBlock adds a trust pool (nil: the system roots) and its anchors.
func (p *picture) poolBlock(b *box, pool *Pool, what string) {
	if pool == nil {
		b.add(b.lines(what+" the system roots", "", 2), attr{"data-pool", "system"})
		return
	}
	live := "read at config load"
	if pool.Live {
		live = "live: followed as it changes"
	}
	b.add(b.lines(what+" "+pool.name()+" ("+live+")", "", 2),
		attr{"data-pool", pool.Source}, attr{"data-live", strconv.FormatBool(pool.Live)}, attr{"data-path", pool.Path})
	for _, a := range pool.Anchors {
		p.certBlock(b, a)
	}
}

// under reports whether config path p is at or below path parent.
func under(p, parent string) bool {
	if parent == "" {
		return false
	}
	return p == parent || strings.HasPrefix(p, parent+".") || strings.HasPrefix(p, parent+"[")
}

// attach gives each finding and each module not analysed the box it
// concerns: the box of the certificate a certificate finding names, else
// the box with the longest config path at or above the finding's path.
func (p *picture) attach() {
	for i, f := range p.rep.Findings {
		var target *box
		if strings.HasPrefix(f.Kind, "certificate_") || strings.HasPrefix(f.Kind, "trust_anchor_") {
			target = p.certBox(f.Message)
		}
		if target == nil {
			target = p.pathBox(f.Path)
		}
		if target != nil {
			target.findings = append(target.findings, i)
		}
	}
	for i, n := range p.rep.NotAnalysed {
		if target := p.pathBox(n.Path); target != nil {
			target.notAn = append(target.notAn, i)
		}
	}
}

// certBox returns the first box that draws the certificate a message
// names ("c3 (CN=x)").
func (p *picture) certBox(msg string) *box {
	for _, c := range p.rep.Certificates {
		if !strings.Contains(msg, describeCert(c)) {
			continue
		}
		for _, b := range p.boxes {
			if slices.Contains(b.certs, c.ID) {
				return b
			}
		}
	}
	return nil
}

// pathBox returns the box with the longest path at or above path.
func (p *picture) pathBox(path string) *box {
	var best *box
	bestLen := -1
	for _, b := range p.boxes {
		for _, bp := range b.paths {
			if under(path, bp) && len(bp) > bestLen {
				best, bestLen = b, len(bp)
			}
		}
	}
	return best
}

// diagramTop is where the diagram starts, below the legend and the
// column headings.
const diagramTop = 175.0

// place gives every box its position and size.
func (p *picture) place() {
	y := diagramTop
	for _, pl := range p.listeners {
		f := pl.frame
		f.x, f.y, f.w = listenerX, y, listenerW
		ry := y + padY + linesHeight(f.blocks) + 6
		for _, pr := range pl.routes {
			b := pr.box
			b.x, b.y, b.w = routeX, ry, routeW
			b.h = linesHeight(b.blocks) + 2*padY
			uy := ry
			for _, up := range pr.ups {
				up.x, up.y, up.w = upX, uy, upW
				up.h = linesHeight(up.blocks) + 2*padY
				uy += up.h + upGap
			}
			rowH := b.h
			if len(pr.ups) > 0 && uy-upGap-ry > rowH {
				rowH = uy - upGap - ry
			}
			ry += rowH + rowGap
		}
		f.h = ry - y - rowGap + 10
		if len(pl.routes) == 0 {
			f.h = ry + 4 - y
		}
		c := pl.client
		c.x, c.w, c.h = clientX, clientW, clientH
		// level with the middle of its legs' ends
		c.y = y + f.h/2 - clientH/2
		if n := len(pl.routes); n > 0 {
			c.y = (pl.routes[0].box.y+pl.routes[n-1].box.y)/2 + 20 - clientH/2
		}
		y += f.h + 26
	}
	p.height = y
}

// linesHeight is the height of the text of a box's blocks.
func linesHeight(bs []block) float64 {
	n := 0
	for _, b := range bs {
		n += len(b.lines)
	}
	return float64(n) * lineH
}

// textLines wraps text to width characters, in one class; continuation
// lines are indented by indent characters.
func textLines(text, class string, width, indent int) []line {
	var out []line
	for i, s := range wrapWords(text, width, indent) {
		ind := 0
		if i > 0 {
			ind = indent
		}
		out = append(out, line{indent: ind, spans: []span{{s, class}}})
	}
	return out
}

// wrapWords breaks text into lines of at most width characters (the
// lines after the first indent characters less), splitting words longer
// than a line (paths) where they must.
func wrapWords(text string, width, indent int) []string {
	width = max(width, 8)
	var lines []string
	cur := []rune{}
	limit := width
	flush := func() {
		lines = append(lines, string(cur))
		cur = cur[:0]
		limit = width - indent
	}
	for _, w := range strings.Fields(text) {
		word := []rune(w)
		for len(word) > 0 {
			room := limit - len(cur)
			if len(cur) > 0 {
				room--
			}
			if len(word) > room && (len(cur) > 0 && len(word) <= limit || room <= 0) {
				flush() // the word goes on the next line
				continue
			}
			// the word, or as much as fits of a word longer than a line
			n := min(len(word), room)
			if len(cur) > 0 {
				cur = append(cur, ' ')
			}
			cur, word = append(cur, word[:n]...), word[n:]
			if len(word) > 0 {
				flush()
			}
		}
	}
	if len(cur) > 0 || len(lines) == 0 {
		lines = append(lines, string(cur))
	}
	return lines
}

// clip shortens s to n characters (not bytes), ending in "...".
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	if n < 4 {
		return string(r[:n])
	}
	return string(r[:n-3]) + "..."
}
