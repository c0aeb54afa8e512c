package topology

import (
	"bufio"
	"bytes"
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// SVGOptions tune the picture of a report.
type SVGOptions struct {
	// Now is the reference time of the days left shown beside each
	// not-after. Default: the report's Generated time. The picture holds
	// no other time, so a report and a Now give the same bytes.
	Now time.Time
	// ExpiryWindow: a certificate expiring within it is coloured as a
	// warning (expired ones as errors). Default: DefaultExpiryWindow.
	ExpiryWindow time.Duration
}

// WriteSVG draws the report: clients, listeners with their routes and
// upstreams, left to right; each leg drawn by kind and labelled; on each
// TLS end the certificates, the trust pools and identity patterns; every
// finding as a numbered badge on the element it concerns (its message and
// fix on hover, and in the list below), modules not analysed marked as
// such; a legend.
func (r *Report) WriteSVG(w io.Writer, opts SVGOptions) error {
	if opts.Now.IsZero() {
		opts.Now = r.Generated
	}
	if opts.ExpiryWindow <= 0 {
		opts.ExpiryWindow = DefaultExpiryWindow
	}
	p := build(r, opts.Now, opts.ExpiryWindow)
	p.attach()
	bw := bufio.NewWriter(w)
	s := &svgWriter{errWriter: errWriter{w: bw}, p: p}
	s.write()
	if s.err != nil {
		return s.err
	}
	return bw.Flush()
}

// errWriter writes formatted text and keeps the first error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// svgWriter writes a laid-out picture.
type svgWriter struct {
	errWriter
	p *picture
}

// badge draws a finding's numbered circle centred at x, y.
func (s *svgWriter) badge(sev Severity, x, y float64, label string) {
	s.printf(`<circle class="sev-%s" cx="%s" cy="%s" r="9"/><text x="%s" y="%s" text-anchor="middle">%s</text>`, sev, px(x), px(y), px(x), px(y+4), label)
}

// naBadge draws the mark of a module not analysed centred at x, y.
func (s *svgWriter) naBadge(x, y float64) {
	s.printf(`<rect x="%s" y="%s" width="18" height="18" rx="3"/><text x="%s" y="%s" text-anchor="middle">?</text>`, px(x-9), px(y-9), px(x), px(y+4))
}

// px formats a coordinate with at most one decimal.
func px(v float64) string {
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
}

// esc escapes text for SVG and drops what XML 1.0 cannot carry at all
// (control characters, U+FFFE, U+FFFF; invalid UTF-8 becomes U+FFFD):
// config text is outside input.
func esc(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case r < 0x20, r >= 0xD800 && r <= 0xDFFF, r == 0xFFFE, r == 0xFFFF:
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	return html.EscapeString(s)
}

func attrs(as []attr) string {
	var b strings.Builder
	for _, a := range as {
		b.WriteString(" " + a.k + `="` + esc(a.v) + `"`)
	}
	return b.String()
}

const svgStyle = `text{white-space:pre;fill:#1f2328}
.h1{font-size:16px;font-weight:bold}.title,.strong{font-weight:bold}.note,.id{fill:#57606a}
.warn{fill:#bc4c00;font-weight:bold}.bad{fill:#cf222e;font-weight:bold}.na{fill:#6e7781;font-style:italic}
.exp-ok{fill:#1a7f37}.exp-soon{fill:#bc4c00;font-weight:bold}.exp-expired{fill:#cf222e;font-weight:bold}
.colhead{fill:#57606a;font-weight:bold;letter-spacing:.5px}
rect.listener{fill:#f6f8fa;stroke:#afb8c1}rect.route,rect.upstream{fill:#fff;stroke:#6e7781}
rect.client{fill:#ddf4ff;stroke:#54aeff}rect.has-na{stroke-dasharray:5 3;fill:#f6f8fa}
path{fill:none}.leg-plain{stroke:#8c959f;stroke-width:2}.leg-plain-warn{stroke:#e16f24;stroke-width:2.5;stroke-dasharray:9 4}
.leg-tls{stroke:#0969da;stroke-width:2.5}.leg-mtls{stroke:#1a7f37;stroke-width:4}.leg-pass{stroke:#8250df;stroke-width:2.5;stroke-dasharray:12 3 2 3}
.leg-unknown{stroke:#8c959f;stroke-width:2;stroke-dasharray:2 4}.leg-refused{stroke:#cf222e;stroke-width:2}
.lbl{paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round;font-weight:bold}
.lbl.leg-plain{fill:#57606a}.lbl.leg-plain-warn{fill:#bc4c00}.lbl.leg-tls{fill:#0969da}.lbl.leg-mtls{fill:#1a7f37}
.lbl.leg-pass{fill:#8250df}.lbl.leg-unknown{fill:#6e7781;font-style:italic}.lbl.leg-refused{fill:#cf222e}
.sev-error{fill:#cf222e}.sev-warning{fill:#e16f24}.sev-info{fill:#0969da}.badge text{fill:#fff;font-weight:bold}
.na-badge rect{fill:#fff;stroke:#6e7781;stroke-dasharray:2 2}.na-badge text{fill:#6e7781;font-weight:bold}`

// legColours are the arrowheads, one per leg class.
var legColours = []struct{ class, colour string }{
	{"leg-plain", "#8c959f"}, {"leg-plain-warn", "#e16f24"}, {"leg-tls", "#0969da"},
	{"leg-mtls", "#1a7f37"}, {"leg-pass", "#8250df"}, {"leg-unknown", "#8c959f"}, {"leg-refused", "#cf222e"},
}

func (s *svgWriter) write() {
	p := s.p
	// the list follows the diagram: written aside first for the height of
	// the whole
	p.place()
	var list bytes.Buffer
	body := s.w
	s.w = &list
	height := s.list(p.height+10) + margin
	s.w = body
	s.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="%s" role="img" aria-labelledby="topology-title">`+"\n",
		px(picW), px(height), px(picW), px(height), px(fontSize))
	s.printf("<title id=\"topology-title\">TLS topology: %d listener(s), %s</title>\n", len(p.rep.Listeners), counts(p.rep.Findings))
	s.printf("<style>%s</style>\n<defs>", svgStyle)
	for _, c := range legColours {
		s.printf(`<marker id="arrow-%s" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="11" markerHeight="11" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" style="fill:%s;stroke:none"/></marker>`, c.class, c.colour)
	}
	s.printf("</defs>\n")
	s.printf(`<rect width="100%%" height="100%%" fill="#fff"/>` + "\n")
	s.printf(`<text class="h1" x="%s" y="28">TLS topology: where TLS ends, who is the TLS server, who trusts whom</text>`+"\n", px(margin))
	s.printf(`<text class="note" x="%s" y="46">%s</text>`+"\n", px(margin), esc(fmt.Sprintf("%d listener(s), %d certificate(s); findings: %s", len(p.rep.Listeners), len(p.rep.Certificates), counts(p.rep.Findings))))
	s.legend(60)
	s.printf(`<text class="colhead" x="%s" y="%s">CLIENTS</text><text class="colhead" x="%s" y="%s">CADDY: LISTENERS AND ROUTES</text><text class="colhead" x="%s" y="%s">UPSTREAMS</text>`+"\n",
		px(clientX), px(diagramTop-12), px(listenerX), px(diagramTop-12), px(upX), px(diagramTop-12))
	if len(p.listeners) == 0 {
		s.printf(`<text class="na" x="%s" y="%s">no listener: the config has no HTTP or layer-4 server</text>`+"\n", px(listenerX), px(diagramTop+14))
	}
	for _, pl := range p.listeners {
		s.printf(`<g class="listener-group"%s>`+"\n", attrs([]attr{{"data-listener", pl.l.Address}, {"data-server", pl.l.Server}}))
		// the legs above the frame, below the boxes at their ends; the
		// badges on top (a client node has none)
		s.box(pl.frame)
		for _, l := range pl.legs {
			s.leg(l)
		}
		for _, b := range pl.boxes[1:] {
			s.box(b)
		}
		for _, b := range pl.boxes {
			s.badges(b)
		}
		s.printf("</g>\n")
	}
	s.printf("%s", list.Bytes())
	s.printf("</svg>\n")
}

// box draws a rectangle and its text.
func (s *svgWriter) box(b *box) {
	class := b.class
	if len(b.notAn) > 0 {
		class += " has-na"
	}
	as := append([]attr{{"id", b.id}, {"class", "box " + b.class}}, b.attrs...)
	if len(b.findings) > 0 {
		var kinds []string
		for _, i := range b.findings {
			kinds = append(kinds, s.p.rep.Findings[i].Kind)
		}
		as = append(as, attr{"data-findings", strings.Join(kinds, " ")})
	}
	if len(b.notAn) > 0 {
		as = append(as, attr{"data-not-analysed", "true"})
	}
	s.printf("<g%s>", attrs(as))
	rx, x, y, anchor := "6", b.x+padX, b.y+padY+fontSize, ""
	if b.class == "client" {
		rx, x, y, anchor = "22", b.x+b.w/2, b.y+b.h/2+4, ` text-anchor="middle"`
	}
	s.printf(`<rect class="%s" x="%s" y="%s" width="%s" height="%s" rx="%s"/>`, class, px(b.x), px(b.y), px(b.w), px(b.h), rx)
	for _, bl := range b.blocks {
		if len(bl.attrs) > 0 {
			s.printf("<g%s>", attrs(bl.attrs))
		}
		for _, ln := range bl.lines {
			s.printf(`<text x="%s" y="%s"%s>`, px(x+float64(ln.indent)*charW), px(y), anchor)
			for _, sp := range ln.spans {
				if sp.class != "" {
					s.printf(`<tspan class="%s">%s</tspan>`, sp.class, esc(sp.text))
				} else {
					s.printf("%s", esc(sp.text))
				}
			}
			s.printf("</text>")
			y += lineH
		}
		if len(bl.attrs) > 0 {
			s.printf("</g>")
		}
	}
	s.printf("</g>\n")
}

// leg draws an edge: a curve with an arrowhead, its label above the end
// (an inbound leg's left of the listener frame).
func (s *svgWriter) leg(l *leg) {
	// from the right side of the first box, into the left side of the
	// second, at the height of its title (of a client node: its middle)
	x1, y1 := l.from.x+l.from.w, l.from.y+20
	x2, y2 := l.to.x, l.to.y+20
	lx := x2 - 14 // the label, right-aligned
	if l.from.class == "client" {
		y1, lx = l.from.y+l.from.h/2, listenerX-6
	}
	xm := (x1 + x2) / 2
	s.printf(`<g class="leg"%s>`, attrs(l.attrs))
	s.printf(`<path class="%s" d="M%s,%s C%s,%s %s,%s %s,%s" marker-end="url(#arrow-%s)"/>`,
		l.class, px(x1), px(y1), px(xm), px(y1), px(xm), px(y2), px(x2-2), px(y2), l.class)
	for i, t := range l.label {
		y := y2 - 6 - float64(len(l.label)-1-i)*lineH
		s.printf(`<text class="lbl %s" x="%s" y="%s" text-anchor="end">%s</text>`, l.class, px(lx), px(y), esc(t))
	}
	s.printf("</g>\n")
}

// badges draws a box's findings (numbered circles) and modules not
// analysed ("?"), on its top edge from the right.
func (s *svgWriter) badges(b *box) {
	x := b.x + b.w - 14 - 22*float64(len(b.findings)+len(b.notAn)-1)
	for _, i := range b.findings {
		f := s.p.rep.Findings[i]
		s.printf(`<g class="badge"%s><title>%s</title>`, findingAttrs("data-finding", f, i),
			esc(fmt.Sprintf("[%d] %s %s: %s\nfix: %s", i+1, strings.ToUpper(string(f.Severity)), f.Kind, f.Message, f.Fix)))
		s.badge(f.Severity, x, b.y, strconv.Itoa(i+1))
		s.printf("</g>\n")
		x += 22
	}
	for _, i := range b.notAn {
		n := s.p.rep.NotAnalysed[i]
		s.printf(`<g class="na-badge"%s><title>%s</title>`, attrs([]attr{{"data-not-analysed", n.Module}, {"data-path", n.Path}}),
			esc("not analysed: "+n.Module+": "+n.Reason+" ("+n.Path+"); what it does to TLS is not guessed"))
		s.naBadge(x, b.y)
		s.printf("</g>\n")
		x += 22
	}
}

// findingAttrs are the data attributes of finding i, f, on a badge (key
// data-finding) or in the list (data-finding-item).
func findingAttrs(key string, f Finding, i int) string {
	return attrs([]attr{{key, f.Kind}, {"data-severity", string(f.Severity)}, {"data-finding-path", f.Path}, {"data-ref", "F" + strconv.Itoa(i+1)}})
}

// legend draws the leg kinds, the finding severities and the expiry
// colours, in two rows from y.
func (s *svgWriter) legend(y float64) {
	s.printf(`<g class="legend" data-legend="true">`)
	x := margin
	s.printf(`<text class="title" x="%s" y="%s">legs:</text>`, px(x), px(y+14))
	x += 7 * charW
	for _, it := range []struct{ class, text string }{
		{"leg-plain", "plaintext"}, {"leg-plain-warn", "plaintext after TLS ends at Caddy"},
		{"leg-tls", "TLS"}, {"leg-mtls", "mTLS (client certificate)"}, {"leg-pass", "TLS passed through (not decrypted)"},
		{"leg-unknown", "not analysed"},
	} {
		s.printf(`<path class="%s" d="M%s,%s H%s" marker-end="url(#arrow-%s)"/>`, it.class, px(x), px(y+10), px(x+34), it.class)
		s.printf(`<text x="%s" y="%s">%s</text>`, px(x+42), px(y+14), esc(it.text))
		x += 52 + float64(len(it.text))*charW
	}
	y += 28
	x = margin
	s.printf(`<text class="title" x="%s" y="%s">findings:</text>`, px(x), px(y+14))
	x += 11 * charW
	for _, sev := range []Severity{SeverityError, SeverityWarning, SeverityInfo} {
		s.printf(`<g class="badge">`)
		s.badge(sev, x+9, y+10, "n")
		s.printf(`</g><text x="%s" y="%s">%s</text>`, px(x+24), px(y+14), sev)
		x += 36 + float64(len(sev))*charW
	}
	s.printf(`<g class="na-badge">`)
	s.naBadge(x+9, y+10)
	s.printf(`</g>`)
	s.printf(`<text x="%s" y="%s">not analysed (not guessed)</text>`, px(x+24), px(y+14))
	x += 60 + 26*charW
	s.printf(`<text class="title" x="%s" y="%s">not after:</text>`, px(x), px(y+14))
	x += 12 * charW
	for _, it := range []struct{ class, text string }{
		{"exp-ok", "valid"}, {"exp-soon", "expires within " + days(s.p.window)}, {"exp-expired", "expired"},
	} {
		s.printf(`<text class="%s" x="%s" y="%s">%s</text>`, it.class, px(x), px(y+14), esc(it.text))
		x += 20 + float64(len(it.text))*charW
	}
	y += 28
	s.printf(`<text class="note" x="%s" y="%s">hover a badge for its finding and fix; the numbers refer to the list below</text>`, px(margin), px(y+14))
	s.printf("</g>\n")
}

// listWidth is the characters per line of the findings list.
const listWidth = 160

// list writes, from y, the findings, each with its fix, and what was not
// analysed; it returns where it ends.
func (s *svgWriter) list(y float64) float64 {
	p := s.p
	s.printf(`<g class="findings" data-findings="%d">`, len(p.rep.Findings))
	s.printf(`<text class="title" x="%s" y="%s">FINDINGS (%s)</text>`+"\n", px(margin), px(y+lineH), esc(counts(p.rep.Findings)))
	y += 2 * lineH
	if len(p.rep.Findings) == 0 {
		s.printf(`<text class="note" x="%s" y="%s">none</text>`, px(margin+30), px(y+lineH))
		y += lineH
	}
	for i, f := range p.rep.Findings {
		head := fmt.Sprintf("%s  %s   [%s]", strings.ToUpper(string(f.Severity)), f.Kind, f.where())
		msg, fix := wrapWords(f.Message, listWidth, 0), wrapWords("fix: "+f.Fix, listWidth, 5)
		s.printf(`<g class="finding"%s><g class="badge">`, findingAttrs("data-finding-item", f, i))
		s.badge(f.Severity, margin+10, y+lineH-4, strconv.Itoa(i+1))
		s.printf(`</g><text class="title" x="%s" y="%s">%s</text>`, px(margin+30), px(y+lineH), esc(head))
		ly := y + 2*lineH
		for _, t := range msg {
			s.printf(`<text x="%s" y="%s">%s</text>`, px(margin+30), px(ly), esc(t))
			ly += lineH
		}
		for j, t := range fix {
			x := margin + 30
			if j > 0 {
				x += 5 * charW
			}
			s.printf(`<text class="note" x="%s" y="%s">%s</text>`, px(x), px(ly), esc(t))
			ly += lineH
		}
		s.printf("</g>\n")
		y += float64(len(msg)+len(fix)+1)*lineH + 8
	}
	s.printf("</g>\n")
	if len(p.rep.NotAnalysed) > 0 {
		s.printf(`<g class="not-analysed">`)
		s.printf(`<text class="title" x="%s" y="%s">NOT ANALYSED (what these do to TLS is not guessed)</text>`, px(margin), px(y+lineH))
		y += 2 * lineH
		for _, n := range p.rep.NotAnalysed {
			s.printf(`<text class="na"%s x="%s" y="%s">%s</text>`, attrs([]attr{{"data-not-analysed-item", n.Module}}), px(margin+30), px(y), esc(clip(n.Module+": "+n.Reason+"   ["+n.Path+"]", listWidth)))
			y += lineH
		}
		s.printf("</g>\n")
	}
	return y
}
