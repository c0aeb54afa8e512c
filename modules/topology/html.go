package topology

import (
	"bufio"
	"cmp"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"

	"github.com/trustline/trustline/modules/material"
)

// HTMLOptions tune the page of a report.
type HTMLOptions struct {
	SVGOptions
	// Refresh, when positive, makes the page reload itself every Refresh
	// seconds (a meta refresh: no script). Default: 0, no reload.
	Refresh int
	// Explain is how the page's `caddy trustline explain` command lines
	// reach the config: "--config Caddyfile" or "--address host:port".
	// Default: "--address localhost:2019" (Caddy's admin address).
	Explain string
}

// pageCSP is the Content-Security-Policy the admin API serves the page
// with: it loads nothing, runs nothing; its style is inline and its
// picture is inline SVG.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const pageStyle = `body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif}
header{padding:12px 20px;background:#fff;border-bottom:1px solid #d0d7de}
h1{margin:0;font-size:18px}header p{margin:4px 0 0;color:#57606a}
main{padding:16px 20px}figure{margin:0;overflow:auto;background:#fff;border:1px solid #d0d7de;border-radius:6px}
figure svg{display:block}
section{margin-top:16px}h2{font-size:15px;margin:0 0 6px}section ul{margin:0;padding-left:20px}
section code{display:block;margin:2px 0 8px;padding:4px 8px;background:#fff;border:1px solid #d0d7de;border-radius:4px;font:12px ui-monospace,monospace;user-select:all;overflow-x:auto;white-space:pre}`

// WriteHTML writes a self-contained page: the picture inline, its style
// inline, no script and nothing fetched, so it renders offline and under
// pageCSP.
func (r *Report) WriteHTML(w io.Writer, opts HTMLOptions) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
	if opts.Refresh > 0 {
		fmt.Fprintf(bw, "<meta http-equiv=\"refresh\" content=\"%d\">\n", opts.Refresh)
	}
	fmt.Fprintf(bw, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>trustline: TLS topology</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>%s</style>\n</head>\n<body>\n", pageStyle)
	fmt.Fprintf(bw, "<header><h1>TLS topology</h1><p>%s</p></header>\n<main><figure>\n",
		html.EscapeString(fmt.Sprintf("report of %s; %d listener(s), %d certificate(s); findings: %s",
			material.TimeString(r.Generated), len(r.Listeners), len(r.Certificates), counts(r.Findings))))
	if err := r.WriteSVG(bw, opts.SVGOptions); err != nil {
		return err
	}
	fmt.Fprintf(bw, "</figure>\n")
	if lines := explainCommands(r, opts.Explain); len(lines) > 0 {
		fmt.Fprintf(bw, "<section><h2>Explain a client</h2><p>What the server does with one client certificate, step by step (<code style=\"display:inline;padding:0 4px\">client.pem</code>: the client's certificate file, its intermediates after it):</p><ul>\n")
		for _, l := range lines {
			fmt.Fprintf(bw, "<li>%s<code>%s</code></li>\n", html.EscapeString(l[0]), html.EscapeString(l[1]))
		}
		fmt.Fprintf(bw, "</ul></section>\n")
	}
	fmt.Fprintf(bw, "</main>\n</body>\n</html>\n")
	return bw.Flush()
}

// explainCommands lists, for each site (a host of a route on a TLS or
// passthrough listener), what it is and the `caddy trustline explain`
// command line that explains a client for it. via selects the config
// (default --address localhost:2019).
func explainCommands(r *Report, via string) [][2]string {
	via = cmp.Or(via, "--address localhost:2019")
	var out [][2]string
	seen := map[string]bool{}
	for _, l := range r.Listeners {
		for _, rt := range l.Routes {
			if !slices.Contains([]string{ModeTLS, ModeMTLS, ModePassthrough, ModeRefused}, rt.Inbound.Mode) {
				continue
			}
			for _, h := range rt.Hosts {
				name := strings.Replace(h, "*", "any", 1)
				cmd := fmt.Sprintf("caddy trustline explain %s --server-name %s --listen %s --cert client.pem", via, name, l.Address)
				if seen[cmd] {
					continue
				}
				seen[cmd] = true
				out = append(out, [2]string{fmt.Sprintf("%s on %s (%s)", h, l.Address, rt.Inbound.Mode), cmd})
			}
		}
	}
	return out
}
