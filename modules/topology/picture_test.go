package topology

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestWrapWords(t *testing.T) {
	for _, tc := range []struct {
		text          string
		width, indent int
		want          []string
	}{
		{"", 10, 0, []string{""}},
		{"plain HTTP in", 40, 0, []string{"plain HTTP in"}},
		{"one two three four", 9, 2, []string{"one two", "three", "four"}},
		{"file /a/very/long/path/to/a/file.pem", 12, 2, []string{"file /a/very", "/long/path", "/to/a/file", ".pem"}},
		{"é€é€é€é€é€é€", 8, 0, []string{"é€é€é€é€", "é€é€"}},
	} {
		got := wrapWords(tc.text, tc.width, tc.indent)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("wrapWords(%q, %d, %d) = %q, want %q", tc.text, tc.width, tc.indent, got, tc.want)
		}
		for i, l := range got {
			max := tc.width
			if i > 0 {
				max -= tc.indent
			}
			if utf8.RuneCountInString(l) > max {
				t.Errorf("line %q longer than %d", l, max)
			}
		}
	}
}

// picReport is a report with one TLS route, one certificate per expiry
// state, and a plaintext leg after termination.
func picReport() *Report {
	gen := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	at := func(d int) *time.Time { t := gen.Add(time.Duration(d) * 24 * time.Hour); return &t }
	return &Report{
		Generated: gen,
		Listeners: []*Listener{{App: "http", Server: "srv0", Path: "apps.http.servers.srv0", Address: ":443", Inbound: "https",
			Routes: []*Route{{Path: "apps.http.servers.srv0.routes[0]", Hosts: []string{"a.test"},
				Inbound:  Inbound{Mode: ModeTLS, Certificate: "files", Certificates: []string{"c1", "c2", "c3"}},
				Outbound: []*Outbound{{Path: "apps.http.servers.srv0.routes[0].handle[0]", Handler: "reverse_proxy", Upstreams: []string{"10.0.0.1:80"}, Mode: OutPlainHTTP}}}}}},
		Certificates: []*Certificate{
			{ID: "c1", Role: RoleServer, Subject: "CN=ok", NotAfter: at(100)},
			{ID: "c2", Role: RoleServer, Subject: "CN=soon", NotAfter: at(10)},
			{ID: "c3", Role: RoleServer, Subject: "CN=gone", NotAfter: at(-2)},
		},
		Findings: []Finding{{Severity: SeverityWarning, Kind: KindPlaintextLeg, Path: "apps.http.servers.srv0.routes[0].handle[0]", Message: "m", Fix: "f"}},
	}
}

// TestSVGNow: days left count from the injected time, coloured by the
// expiry window; the same report and time give the same bytes.
func TestSVGNow(t *testing.T) {
	rep := picReport()
	draw := func(opts SVGOptions) string {
		var b bytes.Buffer
		if err := rep.WriteSVG(&b, opts); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	got := draw(SVGOptions{})
	for _, want := range []string{`data-cert="c1" data-role="server" data-expiry="ok"`, `data-cert="c2" data-role="server" data-expiry="soon"`,
		`data-cert="c3" data-role="server" data-expiry="expired"`, "(100d left)", "(10d left)", "(expired 2d ago)",
		`data-kind="http" data-after-termination="true"`, `class="leg-plain-warn"`} {
		if !strings.Contains(got, want) {
			t.Errorf("picture lacks %s", want)
		}
	}
	if draw(SVGOptions{}) != got {
		t.Error("two drawings of one report differ")
	}
	later := draw(SVGOptions{Now: rep.Generated.Add(5 * 24 * time.Hour), ExpiryWindow: 120 * 24 * time.Hour})
	for _, want := range []string{"(95d left)", "(5d left)", "(expired 7d ago)", `data-cert="c1" data-role="server" data-expiry="soon"`} {
		if !strings.Contains(later, want) {
			t.Errorf("picture at a later time lacks %s", want)
		}
	}
}

// TestHTMLSelfContained: the page fetches nothing and runs nothing.
func TestHTMLSelfContained(t *testing.T) {
	var b bytes.Buffer
	if err := picReport().WriteHTML(&b, HTMLOptions{}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if !strings.HasPrefix(page, "<!DOCTYPE html>") || !strings.Contains(page, "<svg ") {
		t.Fatalf("not a page with an inline SVG:\n%s", page)
	}
	// the namespace is a name, and the empty icon keeps the browser from
	// asking for /favicon.ico
	rest := strings.Replace(page, `xmlns="http://www.w3.org/2000/svg"`, "", 1)
	rest = strings.Replace(rest, `<link rel="icon" href="data:,">`, "", 1)
	if m := regexp.MustCompile(`(?i)<script|\b(src|href)=|url\([^#]|@import|://`).FindString(rest); m != "" {
		t.Errorf("the page refers to something outside itself: %q", m)
	}
	if strings.Contains(page, "http-equiv=\"refresh\"") {
		t.Error("a refresh without being asked for")
	}
	b.Reset()
	if err := picReport().WriteHTML(&b, HTMLOptions{Refresh: 7}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `<meta http-equiv="refresh" content="7">`) {
		t.Error("no meta refresh with Refresh 7")
	}
}

// TestHTMLExplainCommands: the page gives, for each TLS or passthrough
// site, the command line that explains a client for it.
func TestHTMLExplainCommands(t *testing.T) {
	rep := &Report{Listeners: []*Listener{
		{App: "http", Address: ":8443", Routes: []*Route{
			{Hosts: []string{"api.example.com"}, Inbound: Inbound{Mode: ModeMTLS}},
			{Hosts: []string{"*.example.com"}, Inbound: Inbound{Mode: ModeTLS}},
		}},
		{App: "layer4", Address: ":9443", Routes: []*Route{{Hosts: []string{"db.example.com"}, Inbound: Inbound{Mode: ModePassthrough}}}},
		{App: "http", Address: ":80", Routes: []*Route{{Hosts: []string{"plain.example.com"}, Inbound: Inbound{Mode: ModePlainHTTP}}}},
	}}
	var b bytes.Buffer
	if err := rep.WriteHTML(&b, HTMLOptions{Explain: "--config Caddyfile"}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		"<code>caddy trustline explain --config Caddyfile --server-name api.example.com --listen :8443 --cert client.pem</code>",
		"<code>caddy trustline explain --config Caddyfile --server-name any.example.com --listen :8443 --cert client.pem</code>",
		"<code>caddy trustline explain --config Caddyfile --server-name db.example.com --listen :9443 --cert client.pem</code>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(page, "plain.example.com --listen") {
		t.Error("a plain HTTP site has an explain command")
	}
	if strings.Contains(page, "<script") {
		t.Error("a script on the page")
	}
}
