package topology

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"time"
)

// HTMLOptions tune the page of a report.
type HTMLOptions struct {
	SVGOptions
	// Refresh, when positive, makes the page reload itself every Refresh
	// seconds (a meta refresh: no script). Default: 0, no reload.
	Refresh int
}

// pageCSP is the Content-Security-Policy the admin API serves the page
// with: it loads nothing, runs nothing; its style is inline and its
// picture is inline SVG.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const pageStyle = `body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif}
header{padding:12px 20px;background:#fff;border-bottom:1px solid #d0d7de}
h1{margin:0;font-size:18px}header p{margin:4px 0 0;color:#57606a}
main{padding:16px 20px}figure{margin:0;overflow:auto;background:#fff;border:1px solid #d0d7de;border-radius:6px}
figure svg{display:block}`

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
			r.Generated.UTC().Format(time.RFC3339), len(r.Listeners), len(r.Certificates), counts(r.Findings))))
	if err := r.WriteSVG(bw, opts.SVGOptions); err != nil {
		return err
	}
	fmt.Fprintf(bw, "</figure></main>\n</body>\n</html>\n")
	return bw.Flush()
}
