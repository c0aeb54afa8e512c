package topology

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteTable writes the report for a human: each listener with its routes
// and legs, the certificates, the findings, what was not analysed.
func (r *Report) WriteTable(w io.Writer) error {
	p := &printer{errWriter{w: w}}
	p.line(0, "trustline topology report, %s", r.Generated.Format(time.RFC3339))
	if len(r.Listeners) == 0 {
		p.line(0, "\nno listener: the config has no HTTP or layer-4 server")
	}
	for _, l := range r.Listeners {
		p.line(0, "\nLISTENER %s %s %s: %s   [%s]", l.App, l.Server, l.Address, listenerMode(l), l.Path)
		for _, n := range l.Notes {
			p.wrap(2, "- ", n)
		}
		if len(l.Routes) == 0 {
			p.line(2, "no routes")
		}
		for _, rt := range l.Routes {
			r.writeRoute(p, rt)
		}
	}

	p.line(0, "\nCERTIFICATES")
	if len(r.Certificates) == 0 {
		p.line(2, "none")
	} else {
		r.writeCertificates(p)
	}

	p.line(0, "\nFINDINGS (%s)", counts(r.Findings))
	if len(r.Findings) == 0 {
		p.line(2, "none")
	}
	for _, f := range r.Findings {
		p.line(2, "%-8s %s   [%s]", strings.ToUpper(string(f.Severity)), f.Kind, f.where())
		p.wrap(11, "", f.Message)
		p.wrap(11, "fix: ", f.Fix)
	}
	if len(r.NotAnalysed) > 0 {
		p.line(0, "\nNOT ANALYSED (what these do to TLS is not guessed)")
		for _, n := range r.NotAnalysed {
			p.line(2, "%s: %s   [%s]", n.Module, n.Reason, n.Path)
		}
	}
	return p.err
}

// writeCertificates writes the certificates table: one row each, in
// aligned columns (the source last, whole); the reason a certificate was
// not read follows its row, wrapped at word boundaries.
func (r *Report) writeCertificates(p *printer) {
	rows := [][]string{{"  ID", "ROLE", "SUBJECT", "NOT AFTER", "SOURCE"}}
	for _, c := range r.Certificates {
		subject := cmp.Or(c.Subject, strings.Join(c.Names, ","), "-")
		na := "not read"
		if c.NotAfter != nil {
			na = c.NotAfter.Format(time.DateOnly) + " (" + relative(c.NotAfter.Sub(r.Generated)) + ")"
		}
		rows = append(rows, []string{"  " + c.ID, c.Role, cut(subject, 48), na, c.Source})
	}
	// columns as text/tabwriter pads them: the widest cell plus two spaces
	widths := make([]int, len(rows[0])-1)
	for _, row := range rows {
		for i := range widths {
			widths[i] = max(widths[i], len(row[i])+2)
		}
	}
	for i, row := range rows {
		var b strings.Builder
		for j, cell := range row[:len(widths)] {
			b.WriteString(cell)
			b.WriteString(strings.Repeat(" ", widths[j]-len(cell)))
		}
		b.WriteString(row[len(widths)])
		p.line(0, "%s", b.String())
		if i > 0 && r.Certificates[i-1].NotRead != "" {
			p.wrap(6, "not read: ", r.Certificates[i-1].NotRead)
		}
	}
}

func (r *Report) writeRoute(p *printer, rt *Route) {
	hosts := cmp.Or(strings.Join(rt.Hosts, ", "), "any host")
	if len(rt.Match) > 0 {
		hosts += " (" + strings.Join(rt.Match, "; ") + ")"
	}
	p.line(2, "route %s   [%s]", hosts, rt.Path)
	in := rt.Inbound
	switch in.Mode {
	case ModePlainHTTP:
		p.wrap(4, "in:  ", "plain HTTP (no TLS at Caddy)")
	case ModeTLS, ModeMTLS:
		p.wrap(4, "in:  ", legStyles[in.Mode].label+" terminated by Caddy; certificate: "+in.Certificate+ids(in.Certificates))
		if ca := in.ClientAuth; ca != nil {
			p.wrap(9, "", "client certificates: mode "+ca.Mode+"; "+ca.Verified)
			for _, v := range ca.Verifiers {
				p.wrap(9, "verifier ", v)
			}
			for _, c := range ca.CRLs {
				p.wrap(9, "", c.describe())
			}
		}
	case ModePassthrough:
		if len(in.PassthroughTo) > 0 {
			p.wrap(4, "in:  ", "TLS passed through, not decrypted, to "+strings.Join(in.PassthroughTo, ", "))
		} else {
			p.wrap(4, "in:  ", "TLS ClientHello read; not passed on")
		}
	case ModeRefused:
		p.wrap(4, "in:  ", "refused with TLS alert "+in.Refusal)
	case ModeTCP:
		to := ""
		if len(in.PassthroughTo) > 0 {
			to = " to " + strings.Join(in.PassthroughTo, ", ")
		}
		p.wrap(4, "in:  ", "raw TCP forwarded"+to+" (TLS, if any, passes through)")
	}
	if len(in.PeerPatterns) > 0 {
		p.wrap(9, "", "peer identity must match: "+strings.Join(in.PeerPatterns, "; "))
	}
	for _, o := range rt.Outbound {
		mode := map[string]string{OutPlainHTTP: "plain HTTP", OutTLS: "TLS", OutMTLS: "mTLS", OutTCP: "raw TCP", OutUnknown: "a transport not analysed"}[o.Mode]
		when := ""
		if len(o.When) > 0 {
			when = " (when " + strings.Join(o.When, ", ") + ")"
		}
		p.wrap(4, "out: ", fmt.Sprintf("%s to %s over %s%s   [%s]", o.Handler, strings.Join(o.Upstreams, ", "), mode, when, o.Path))
		if o.Mode == OutTLS || o.Mode == OutMTLS {
			if o.InsecureSkipVerify {
				p.wrap(9, "", "upstream certificate NOT verified (insecure_skip_verify)")
			}
			if !o.InsecureSkipVerify || o.TrustPool != nil {
				p.wrap(9, "trust: ", o.TrustPool.describe())
			}
			if o.ServerName != "" {
				p.wrap(9, "server name: ", o.ServerName)
			}
			if len(o.UpstreamIdentity) > 0 {
				p.wrap(9, "upstream identity: ", strings.Join(o.UpstreamIdentity, ", "))
			}
		}
		if o.ClientIdentity != "" {
			p.wrap(9, "client identity: ", o.ClientIdentity+ids(o.ClientCertificates))
		}
		if len(o.IdentityHeaders) > 0 {
			p.wrap(9, "identity headers: ", strings.Join(o.IdentityHeaders, ", "))
		}
		for _, n := range o.Notes {
			p.wrap(9, "", n)
		}
	}
	if len(rt.Outbound) == 0 && len(rt.Handlers) > 0 && in.Mode != ModePassthrough && in.Mode != ModeRefused {
		p.wrap(4, "out: ", "none (handled by Caddy: "+strings.Join(rt.Handlers, ", ")+")")
	}
}

// where is where a finding points: its Caddyfile line when known, else
// its config path.
func (f *Finding) where() string {
	if f.Location != "" {
		return f.Location
	}
	return f.Path
}

func listenerMode(l *Listener) string {
	switch l.Inbound {
	case "https":
		return "HTTPS, Caddy terminates TLS"
	case ModePlainHTTP:
		return "plain HTTP"
	default:
		return "layer 4 (raw TCP)"
	}
}

func ids(list []string) string {
	if len(list) == 0 {
		return ""
	}
	return " [" + strings.Join(list, " ") + "]"
}

func counts(fs []Finding) string {
	n := map[Severity]int{}
	for _, f := range fs {
		n[f.Severity]++
	}
	return fmt.Sprintf("%d error, %d warning, %d info", n[SeverityError], n[SeverityWarning], n[SeverityInfo])
}

func relative(d time.Duration) string {
	if d <= 0 {
		return "EXPIRED " + days(-d) + " ago"
	}
	return "in " + days(d)
}

// cut shortens s to at most n bytes, after a whole word (a name of a
// distinguished name, a word), marking the cut with "...".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	head := s[:n-3]
	// unless the cut falls between words, back to the last one
	if i := strings.LastIndexAny(head, " ,"); i > 0 && s[n-3] != ' ' && s[n-3] != ',' {
		head = head[:i]
	}
	return strings.TrimRight(head, " ,") + "..."
}

// printer writes indented, word-wrapped lines.
type printer struct{ errWriter }

const width = 100

func (p *printer) line(indent int, format string, args ...any) {
	p.printf("%s%s\n", strings.Repeat(" ", indent), fmt.Sprintf(format, args...))
}

// wrap writes prefix+text at indent, continuing on lines indented under
// the text.
func (p *printer) wrap(indent int, prefix, text string) {
	first := strings.Repeat(" ", indent) + prefix
	rest := strings.Repeat(" ", indent+len(prefix))
	line := first
	empty := true
	for _, word := range strings.Fields(text) {
		if !empty && len(line)+1+len(word) > width {
			p.line(0, "%s", line)
			line, empty = rest, true
		}
		if empty {
			line += word
		} else {
			line += " " + word
		}
		empty = false
	}
	p.line(0, "%s", line)
}
