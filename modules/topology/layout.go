package topology

import (
	"strconv"
	"strings"
	"time"
)

// The picture of a report is laid out in three passes: the boxes and
// their text are built from the report (build), findings and modules not
// analysed are attached to the box they concern (attach), and the boxes
// get their positions in fixed columns, left to right: clients, listeners
// (a frame around their routes), upstreams (place). svg.go writes the
// result. Every step walks slices in report order and measures text in
// characters of a monospace font, so a report gives the same bytes every
// time.

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

// box is a rectangle with text: a listener frame, a route, an upstream.
type box struct {
	id    string
	class string
	path  string
	// also are other config paths the box stands for (a route's
	// client_authentication, its pools), for attaching findings
	also   []string
	attrs  []attr
	blocks []block
	// certs are the IDs of the certificates drawn in the box.
	certs []string

	x, y, w, h float64
	findings   []int // indexes into Report.Findings
	notAn      []int // indexes into Report.NotAnalysed
}

// leg is an edge: the inbound leg from a client node to a route, or an
// outbound leg from a route to an upstream box.
type leg struct {
	id, kind, class string
	attrs           []attr
	label           []string
	from, to        *box
}

// picListener is a listener frame with its routes.
type picListener struct {
	l      *Listener
	frame  *box
	client *box
	routes []*picRoute
}

// picRoute is a route box with its outbound legs.
type picRoute struct {
	rt  *Route
	box *box
	in  *leg
	out []*leg
	ups []*box
}

// picture is a laid-out report.
type picture struct {
	rep       *Report
	now       time.Time
	window    time.Duration
	listeners []*picListener
	boxes     []*box // every box, in drawing order
	unplaced  []int  // findings attached to no box
	top       float64
	height    float64
}

// expiryClass colours a not-after by the report's thresholds.
func (p *picture) expiryClass(na time.Time) (class, text string) {
	return p.expiryClassWithin(na, p.window)
}

// expiryClassWithin colours a time limit: expired past it, soon within
// window of it.
func (p *picture) expiryClassWithin(na time.Time, window time.Duration) (class, text string) {
	left := na.Sub(p.now)
	switch {
	case left <= 0:
		return "exp-expired", "expired " + days(-left) + " ago"
	case left <= window:
		return "exp-soon", days(left) + " left"
	}
	return "exp-ok", days(left) + " left"
}

// build makes the boxes and legs of a report.
func build(rep *Report, now time.Time, window time.Duration) *picture {
	p := &picture{rep: rep, now: now, window: window}
	for i, l := range rep.Listeners {
		pl := &picListener{l: l}
		lid := "l" + strconv.Itoa(i)
		pl.frame = &box{id: lid, class: "listener", path: l.Path,
			attrs: []attr{{"data-listener", l.Address}, {"data-app", l.App}, {"data-inbound", l.Inbound}, {"data-path", l.Path}}}
		title := l.App + " " + l.Server + " " + l.Address + " · " + listenerMode(l)
		pl.frame.blocks = append(pl.frame.blocks, block{lines: textLines(title, "title", frameChars)})
		var notes []line
		for _, n := range l.Notes {
			notes = append(notes, textLinesIndent("- "+n, "note", frameChars, 2)...)
		}
		if len(notes) > 0 {
			pl.frame.blocks = append(pl.frame.blocks, block{lines: notes})
		}
		if len(l.Routes) == 0 {
			pl.frame.blocks = append(pl.frame.blocks, block{lines: []line{{spans: []span{{"no routes", "note"}}}}})
		}
		who := "clients"
		if len(l.TrustedProxies) > 0 {
			who = "load balancer"
		}
		pl.client = &box{id: lid + "c", class: "client", blocks: []block{{lines: []line{{spans: []span{{who, "title"}}}}}}}
		p.boxes = append(p.boxes, pl.frame, pl.client)
		for j, rt := range l.Routes {
			pl.routes = append(pl.routes, p.buildRoute(pl, lid+"r"+strconv.Itoa(j), rt))
		}
		p.listeners = append(p.listeners, pl)
	}
	return p
}

// buildRoute makes a route box (the TLS end of the inbound leg), its
// inbound leg and its outbound legs with their upstream boxes.
func (p *picture) buildRoute(pl *picListener, id string, rt *Route) *picRoute {
	pr := &picRoute{rt: rt}
	b := &box{id: id, class: "route", path: rt.Path, attrs: []attr{{"data-route", rt.Path}, {"data-mode", rt.Inbound.Mode}}}
	pr.box = b
	p.boxes = append(p.boxes, b)
	width := routeChars

	hosts := "any host"
	if len(rt.Hosts) > 0 {
		hosts = strings.Join(rt.Hosts, ", ")
	}
	b.blocks = append(b.blocks, block{lines: textLines(hosts, "title", width)})
	if len(rt.Match) > 0 {
		b.blocks = append(b.blocks, block{lines: textLines("match: "+strings.Join(rt.Match, "; "), "note", width)})
	}
	in := rt.Inbound
	var lines []line
	add := func(text, class string) { lines = append(lines, textLinesIndent(text, class, width, 2)...) }
	switch in.Mode {
	case ModePlainHTTP:
		add("plain HTTP in: TLS, if any, ended before Caddy", "")
	case ModeTLS, ModeMTLS:
		what := "TLS"
		if in.Mode == ModeMTLS {
			what = "mTLS"
		}
		add(what+" ends here; Caddy is the TLS server", "strong")
		add("certificate: "+in.Certificate, "")
	case ModePassthrough:
		if len(in.PassthroughTo) > 0 {
			add("TLS passed through, not decrypted: the upstream is the TLS server", "strong")
		} else {
			add("TLS ClientHello read; not passed on", "")
		}
	case ModeRefused:
		add("refused with TLS alert "+in.Refusal, "strong")
	case ModeTCP:
		add("raw TCP (TLS, if any, passes through)", "")
	}
	b.blocks = append(b.blocks, block{lines: lines})
	for _, c := range in.Certificates {
		p.certBlock(b, c, width)
	}
	if ca := in.ClientAuth; ca != nil {
		var cl []line
		cl = append(cl, textLinesIndent("client certificates: mode "+ca.Mode+"; "+ca.Verified, "", width, 2)...)
		for _, v := range ca.Verifiers {
			class := ""
			if strings.Contains(v, "not analysed") {
				class = "na"
			}
			cl = append(cl, textLinesIndent("verifier "+v, class, width, 2)...)
		}
		for _, pat := range ca.Patterns {
			cl = append(cl, textLinesIndent("identity must match: "+pat, "", width, 2)...)
		}
		b.blocks = append(b.blocks, block{attrs: []attr{{"data-client-auth", ca.Mode}}, lines: cl})
		b.also = append(b.also, ca.Path)
		for _, c := range ca.CRLs {
			p.crlBlock(b, c, width)
		}
		for _, pool := range ca.Pools {
			b.also = append(b.also, pool.Path)
			p.poolBlock(b, pool, "clients verified against", width)
		}
	}
	if len(in.PeerPatterns) > 0 {
		var pl []line
		for _, pat := range in.PeerPatterns {
			pl = append(pl, textLinesIndent("peer identity must match: "+pat, "", width, 2)...)
		}
		b.blocks = append(b.blocks, block{attrs: []attr{{"data-identity-patterns", strconv.Itoa(len(in.PeerPatterns))}}, lines: pl})
	}
	if len(rt.Outbound) == 0 && len(rt.Handlers) > 0 && in.Mode != ModePassthrough && in.Mode != ModeRefused {
		b.blocks = append(b.blocks, block{lines: textLines("handled by Caddy: "+strings.Join(rt.Handlers, ", "), "note", width)})
	}

	pr.in = &leg{id: rt.Path, kind: in.Mode, class: inClass(in.Mode), from: pl.client, to: b, label: []string{inLabel(in.Mode)},
		attrs: []attr{{"data-leg", rt.Path}, {"data-direction", "in"}, {"data-kind", in.Mode}, {"data-listener", pl.l.Address}}}
	for k, o := range rt.Outbound {
		up, lg := p.buildOutbound(id+"o"+strconv.Itoa(k), rt, o, b)
		pr.ups = append(pr.ups, up)
		pr.out = append(pr.out, lg)
	}
	return pr
}

// terminated reports whether Caddy decrypts the route's inbound TLS.
func terminated(rt *Route) bool {
	return rt.Inbound.Mode == ModeTLS || rt.Inbound.Mode == ModeMTLS
}

// buildOutbound makes an upstream box (the TLS end of the outbound leg,
// as Caddy sees it) and the leg to it.
func (p *picture) buildOutbound(id string, rt *Route, o *Outbound, from *box) (*box, *leg) {
	width := upChars
	up := &box{id: id, class: "upstream", path: o.Path, attrs: []attr{{"data-upstream", strings.Join(o.Upstreams, " ")}, {"data-path", o.Path}}}
	p.boxes = append(p.boxes, up)
	ups := strings.Join(o.Upstreams, ", ")
	if ups == "" {
		ups = "(no upstream)"
	}
	up.blocks = append(up.blocks, block{lines: textLines(ups, "title", width)})
	sub := o.Handler
	if o.Transport != "" && o.Transport != "http" {
		sub += " · transport " + o.Transport
	}
	if len(o.When) > 0 {
		sub += " · when " + strings.Join(o.When, ", ")
	}
	up.blocks = append(up.blocks, block{lines: textLines(sub, "note", width)})

	var lines []line
	add := func(text, class string) { lines = append(lines, textLinesIndent(text, class, width, 2)...) }
	afterTermination := terminated(rt)
	kind, class := o.Mode, "leg-plain"
	label := []string{}
	switch o.Mode {
	case OutPlainHTTP:
		label = append(label, "plain HTTP")
		if afterTermination {
			class = "leg-plain-warn"
			add("plaintext after TLS termination", "warn")
		}
	case OutTCP:
		switch {
		case afterTermination:
			class = "leg-plain-warn"
			label = append(label, "raw TCP, decrypted")
			add("plaintext after TLS termination", "warn")
		case rt.Inbound.Mode == ModePassthrough:
			class = "leg-pass"
			label = append(label, "TLS passed through")
			if len(rt.Hosts) > 0 {
				label = append(label, "SNI "+strings.Join(rt.Hosts, ", "))
			}
			add("TLS server: this upstream (Caddy does not decrypt)", "strong")
		default:
			label = append(label, "raw TCP")
		}
	case OutTLS, OutMTLS:
		class = "leg-tls"
		label = append(label, "TLS")
		if o.Mode == OutMTLS {
			class = "leg-mtls"
			label[0] = "mTLS"
		}
		if o.Handler != "reverse_proxy" {
			label = append(label, "re-encrypted at layer 4")
		} else if afterTermination {
			label[0] += ", re-encrypted"
		}
		add("TLS server: this upstream; Caddy is the client", "strong")
		if o.InsecureSkipVerify {
			add("its certificate is NOT verified (insecure_skip_verify)", "bad")
		}
		if o.ServerName != "" {
			add("server name: "+o.ServerName, "")
		}
		for _, pin := range o.UpstreamIdentity {
			add("upstream identity must be: "+pin, "")
		}
	case OutUnknown:
		class = "leg-unknown"
		label = append(label, "not analysed")
		add("transport "+o.Transport+" not analysed: what this leg does to TLS is not known", "na")
	}
	if o.ProxyProtocol != "" {
		pp := "PROXY " + o.ProxyProtocol
		if o.IdentityTLVs {
			pp += " + identity TLVs"
		}
		label = append(label, pp)
	}
	up.blocks = append(up.blocks, block{lines: lines})
	if (o.Mode == OutTLS || o.Mode == OutMTLS) && (!o.InsecureSkipVerify || o.TrustPool != nil) {
		p.poolBlock(up, o.TrustPool, "upstream verified against", width)
	}
	if o.ClientIdentity != "" {
		up.blocks = append(up.blocks, block{attrs: []attr{{"data-client-identity", "true"}}, lines: textLinesIndent("Caddy presents: "+o.ClientIdentity, "", width, 2)})
		for _, c := range o.ClientCertificates {
			p.certBlock(up, c, width)
		}
	}
	if len(o.IdentityHeaders) > 0 {
		stripped := p.headersStripped(o)
		state, cls := "client copies stripped", ""
		if !stripped {
			state, cls = "client copies NOT all stripped", "warn"
		}
		up.blocks = append(up.blocks, block{attrs: []attr{{"data-identity-headers", strings.Join(o.IdentityHeaders, ",")}, {"data-stripped", strconv.FormatBool(stripped)}},
			lines: append(textLinesIndent("identity headers set: "+strings.Join(o.IdentityHeaders, ", "), "", width, 2), textLinesIndent(state, cls, width, 2)...)})
	}
	var notes []line
	for _, n := range o.Notes {
		notes = append(notes, textLinesIndent("- "+n, "note", width, 2)...)
	}
	if len(notes) > 0 {
		up.blocks = append(up.blocks, block{lines: notes})
	}
	for i := range label {
		label[i] = clip(label[i], lblChars)
	}
	if len(label) > lblLines {
		label = label[:lblLines]
	}
	lg := &leg{id: o.Path, kind: kind, class: class, from: from, to: up, label: label,
		attrs: []attr{{"data-leg", o.Path}, {"data-direction", "out"}, {"data-kind", kind},
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
	for _, f := range p.rep.Findings {
		if f.Kind == KindIdentityHeaders && f.Severity.Rank() >= SeverityWarning.Rank() && under(f.Path, o.Path) {
			return false
		}
	}
	return true
}

// certBlock adds a certificate to a box: subject, issuer, not-after and
// days left, coloured by the expiry thresholds.
func (p *picture) certBlock(b *box, id string, width int) {
	c := p.rep.Certificate(id)
	if c == nil {
		return
	}
	b.certs = append(b.certs, id)
	at := []attr{{"data-cert", c.ID}, {"data-role", c.Role}}
	subject := c.Subject
	if subject == "" && len(c.Names) > 0 {
		subject = strings.Join(c.Names, ", ")
	}
	if subject == "" {
		subject = c.Source
	}
	role := map[string]string{RoleServer: "server cert", RoleClient: "client cert", RoleTrustAnchor: "CA"}[c.Role]
	lines := []line{{indent: 2, spans: []span{{c.ID + " ", "id"}, {clip(role+" "+subject, width-len(c.ID)-3), "strong"}}}}
	if c.Issuer != "" && c.Issuer != c.Subject {
		lines = append(lines, line{indent: 4, spans: []span{{clip("issuer "+c.Issuer, width-4), ""}}})
	}
	if c.NotAfter != nil {
		cls, left := p.expiryClass(*c.NotAfter)
		if c.RenewBy != nil && cls != "exp-expired" {
			// Caddy renews it: orange only once its renewal is overdue
			cls = "exp-ok"
			if !p.now.Before(*c.RenewBy) {
				cls = "exp-soon"
			}
		}
		at = append(at, attr{"data-expiry", strings.TrimPrefix(cls, "exp-")})
		lines = append(lines, line{indent: 4, spans: []span{{"not after " + c.NotAfter.UTC().Format(time.DateOnly) + " ", ""}, {"(" + left + ")", cls}}})
	} else {
		at = append(at, attr{"data-expiry", "unknown"})
		for _, l := range textLinesIndent("not read: "+c.NotRead, "na", width-4, 2) {
			l.indent += 4
			lines = append(lines, l)
		}
	}
	b.blocks = append(b.blocks, block{attrs: at, lines: lines})
}

// crlBlock adds a CRL in force: its file, issuer and next update with the
// time left, coloured like a certificate's expiry (orange within
// crlExpiringWindow of its next update, red past it).
func (p *picture) crlBlock(b *box, c *CRL, width int) {
	at := []attr{{"data-crl", c.File}, {"data-path", c.Path}}
	lines := []line{{indent: 2, spans: []span{{clip("CRL "+c.File, width-2), "strong"}}}}
	switch {
	case c.NotRead != "":
		at = append(at, attr{"data-expiry", "unknown"})
		for _, l := range textLinesIndent("not read: "+c.NotRead, "na", width-4, 2) {
			l.indent += 4
			lines = append(lines, l)
		}
	default:
		lines = append(lines, line{indent: 4, spans: []span{{clip("issuer "+c.Issuer+", "+strconv.Itoa(c.Revoked)+" revoked", width-4), ""}}})
		if c.NextUpdate == nil {
			at = append(at, attr{"data-expiry", "unknown"})
			lines = append(lines, line{indent: 4, spans: []span{{"no next update", "na"}}})
			break
		}
		cls, left := p.expiryClassWithin(*c.NextUpdate, crlExpiringWindow)
		at = append(at, attr{"data-expiry", strings.TrimPrefix(cls, "exp-")})
		lines = append(lines, line{indent: 4, spans: []span{{"next update " + c.NextUpdate.Format(crlTime) + " ", ""}, {"(" + left + ")", cls}}})
	}
	b.blocks = append(b.blocks, block{attrs: at, lines: lines})
}

// poolBlock adds a trust pool (nil: the system roots) and its anchors.
func (p *picture) poolBlock(b *box, pool *Pool, what string, width int) {
	if pool == nil {
		b.blocks = append(b.blocks, block{attrs: []attr{{"data-pool", "system"}}, lines: textLinesIndent(what+" the system roots", "", width, 2)})
		return
	}
	src := pool.Source + " " + pool.Description
	if pool.Source == "system" {
		src = pool.Description
	}
	live := "read at config load"
	if pool.Live {
		live = "live: followed as it changes"
	}
	b.blocks = append(b.blocks, block{attrs: []attr{{"data-pool", pool.Source}, {"data-live", strconv.FormatBool(pool.Live)}, {"data-path", pool.Path}},
		lines: textLinesIndent(what+" "+src+" ("+live+")", "", width, 2)})
	for _, a := range pool.Anchors {
		p.certBlock(b, a, width)
	}
}

func inClass(mode string) string {
	switch mode {
	case ModeTLS:
		return "leg-tls"
	case ModeMTLS:
		return "leg-mtls"
	case ModePassthrough:
		return "leg-pass"
	case ModeRefused:
		return "leg-refused"
	}
	return "leg-plain"
}

func inLabel(mode string) string {
	switch mode {
	case ModePlainHTTP:
		return "plain HTTP"
	case ModeTLS:
		return "TLS"
	case ModeMTLS:
		return "mTLS"
	case ModePassthrough:
		return "TLS (passed)"
	case ModeRefused:
		return "refused"
	}
	return "raw TCP"
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
		if target == nil {
			p.unplaced = append(p.unplaced, i)
			continue
		}
		target.findings = append(target.findings, i)
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
			for _, id := range b.certs {
				if id == c.ID {
					return b
				}
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
		for _, bp := range append([]string{b.path}, b.also...) {
			if under(path, bp) && len(bp) > bestLen {
				best, bestLen = b, len(bp)
			}
		}
	}
	return best
}

// place gives every box its position and size.
func (p *picture) place(top float64) {
	p.top = top
	y := top
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
		if len(pl.routes) == 0 {
			ry += 4
		}
		f.h = ry - y - rowGap + 10
		if len(pl.routes) == 0 {
			f.h = ry - y
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

// textLines wraps text to width characters, each line with one class.
func textLines(text, class string, width int) []line {
	return textLinesIndent(text, class, width, 0)
}

// textLinesIndent wraps text to width characters; continuation lines are
// indented by indent characters.
func textLinesIndent(text, class string, width, indent int) []line {
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
	if width < 8 {
		width = 8
	}
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
			if len(word) <= room {
				if len(cur) > 0 {
					cur = append(cur, ' ')
				}
				cur = append(cur, word...)
				word = nil
				continue
			}
			if len(cur) > 0 && len(word) <= limit {
				flush()
				continue
			}
			// a word longer than a line: fill this line with its start
			if room <= 0 {
				flush()
				continue
			}
			if len(cur) > 0 {
				cur = append(cur, ' ')
			}
			cur = append(cur, word[:room]...)
			word = word[room:]
			flush()
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
