package explain

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trustline/trustline/modules/verify"
)

// Report is explain's answer: the steps the server takes with the client,
// in order, and the verdict (its JSON is documented in the README).
type Report struct {
	// Generated is when the answer was made.
	Generated time.Time `json:"generated"`
	// Source says which config answered ("config <file>", "running instance").
	Source string `json:"source"`
	// Request is what was asked, the chain described (never its PEM).
	Request RequestSummary `json:"request"`
	// Steps in the order the server takes them.
	Steps []verify.Step `json:"steps"`
	// Verdict is the outcome.
	Verdict Verdict `json:"verdict"`
}

// RequestSummary echoes the request.
type RequestSummary struct {
	ServerName string        `json:"server_name"`
	Listen     string        `json:"listen,omitempty"`
	Method     string        `json:"method,omitempty"`
	Path       string        `json:"path,omitempty"`
	ALPN       []string      `json:"alpn,omitempty"`
	Upstream   string        `json:"upstream,omitempty"`
	Chain      []verify.Cert `json:"chain,omitempty"`
}

// The outcomes of a verdict.
const (
	// OutcomeAdmitted: the handshake completes and a handler answers the
	// request below 400 (or the backend dialed by --upstream accepts us).
	OutcomeAdmitted = "admitted"
	// OutcomeRoutedElsewhere: the handshake completes, but no route of
	// the site takes the request (Caddy answers an empty 200).
	OutcomeRoutedElsewhere = "routed_elsewhere"
	// OutcomePassthrough: TLS does not end here; the backend sees the
	// client's certificate and decides.
	OutcomePassthrough = "passthrough"
	// OutcomeRefusedHandshake: the handshake fails; Alert is what the
	// client sees.
	OutcomeRefusedHandshake = "refused_handshake"
	// OutcomeRefusedHTTP: the request is answered with Status >= 400.
	OutcomeRefusedHTTP = "refused_http"
	// OutcomeUndetermined: explain cannot tell without doing what it
	// never does (fetch a CRL or an OCSP answer, run an unknown handler).
	OutcomeUndetermined = "undetermined"
)

// Verdict is the outcome of the explained client.
type Verdict struct {
	// Outcome is one of the Outcome constants.
	Outcome string `json:"outcome"`
	// Reason is the reason class of a refusal (verify's Reason constants:
	// the `reason` of the refusal logs and metrics).
	Reason string `json:"reason,omitempty"`
	// Alert is the TLS alert the client receives, for a refused
	// handshake ("certificate required", "unknown certificate
	// authority", "bad certificate", ...).
	Alert string `json:"alert,omitempty"`
	// Status is the HTTP status of the answer.
	Status int `json:"status,omitempty"`
	// Summary says it in one sentence.
	Summary string `json:"summary"`
}

// ExitCode is the command's exit status for the verdict: 0 admitted (or
// passed through, or routed elsewhere), 2 refused, 1 could not evaluate.
func (v Verdict) ExitCode() int {
	switch v.Outcome {
	case OutcomeAdmitted, OutcomePassthrough, OutcomeRoutedElsewhere:
		return 0
	case OutcomeRefusedHandshake, OutcomeRefusedHTTP:
		return 2
	}
	return 1
}

// WriteTable writes the report for people: the request, each step (its
// chain, anchors and checks indented below it), and the verdict.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	q := r.Request
	fmt.Fprintf(tw, "explain\t%s %s%s on %s (%s)\n", q.Method, q.ServerName, q.Path, cmp.Or(q.Listen, "its listener"), r.Source)
	if q.Upstream != "" {
		fmt.Fprintf(tw, "upstream\t%s\n", q.Upstream)
	}
	if len(q.Chain) == 0 {
		fmt.Fprintf(tw, "client\tsends no certificate\n")
	}
	label := "client"
	for _, c := range q.Chain {
		fmt.Fprintf(tw, "%s\t%s\n", label, certLine(c))
		label = ""
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "STAGE\tWHO\tVERDICT\tREASON\tDETAIL\n")
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Stage, s.Name, s.Verdict, cmp.Or(s.Reason, "-"), oneLine(s.Detail))
		for i, c := range s.Chain {
			fmt.Fprintf(tw, "\t\t\t\t  chain %d: %s\n", i, certLine(c))
		}
		for _, c := range s.Anchors {
			fmt.Fprintf(tw, "\t\t\t\t  anchor: %s\n", certLine(c))
		}
		for _, c := range s.Checks {
			mark := "no "
			if c.OK {
				mark = "yes"
			}
			fmt.Fprintf(tw, "\t\t\t\t  %s %s %s: %s\n", mark, c.Name, oneLine(c.Want), clip(oneLine(c.Have), 100))
		}
	}
	fmt.Fprintln(tw)
	v := r.Verdict
	line := v.Outcome
	if v.Alert != "" {
		line += fmt.Sprintf(", alert %q", v.Alert)
	}
	if v.Status != 0 {
		line += fmt.Sprintf(", HTTP %d", v.Status)
	}
	if v.Reason != "" {
		line += ", reason " + v.Reason
	}
	fmt.Fprintf(tw, "VERDICT\t%s\n\t%s\n", line, oneLine(v.Summary))
	return tw.Flush()
}

func certLine(c verify.Cert) string {
	s := fmt.Sprintf("%q serial %s, not after %s", c.Subject, c.Serial, c.NotAfter.UTC().Format(time.RFC3339))
	if c.Source != "" {
		s += ", from " + c.Source
	}
	if c.SubjectKeyID != "" {
		s += ", key ID " + c.SubjectKeyID
	}
	return s
}

// clip shortens s for the table (the JSON has it whole).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "... (" + fmt.Sprint(len(s)) + " bytes; whole in --format json)"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
