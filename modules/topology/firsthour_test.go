package topology_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/trustline/trustline/modules/topology"
)

// analyzeCaddyfile adapts a Caddyfile and analyses it.
func analyzeCaddyfile(t *testing.T, caddyfile string) *topology.Report {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	rep, err := topology.Analyze(cfg, topology.Options{NoFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// findingsOf returns the findings of a kind.
func findingsOf(rep *topology.Report, kind string) []topology.Finding {
	var out []topology.Finding
	for _, f := range rep.Findings {
		if f.Kind == kind {
			out = append(out, f)
		}
	}
	return out
}

// TestFirstHourFindings: the mistakes of issue 22 that lock clients out
// are findings the --fail-on warning gate fails on, each with its fix,
// so that a config file is judged before it is loaded; the right forms
// give none.
func TestFirstHourFindings(t *testing.T) {
	site := func(clientAuth, body string) string {
		return "https://mtls.test {\n\ttls internal {\n\t\tclient_auth {\n" + clientAuth + "\t\t}\n\t}\n\t" + body + "\n}\n"
	}
	live := "\t\t\tverifier live_trust bundle /etc/tl/ca.pem\n"
	for _, tc := range []struct {
		name, caddyfile, kind string
		sev                   topology.Severity
		msg                   string
	}{
		{"1 mode require_and_verify", site("\t\t\tmode require_and_verify\n"+live, `respond "x"`), topology.KindLiveTrustMisuse, topology.SeverityError, "`mode require_and_verify` with `verifier live_trust`"},
		{"2 trust_pool beside live_trust", site("\t\t\ttrust_pool file /etc/tl/ca.pem\n"+live, `respond "x"`), topology.KindLiveTrustMisuse, topology.SeverityError, "`trust_pool` (JSON: ca) together with `verifier live_trust`"},
		{"3 peer before live_trust", site("\t\t\tverifier peer dns:*.test\n"+live, `respond "x"`), topology.KindLiveTrustMisuse, topology.SeverityError, "`verifier peer` is listed before `verifier live_trust`"},
		{"4 peer_authorize without client_auth", "https://open.test {\n\ttls internal\n\tpeer_authorize dns:*.test\n\trespond \"x\"\n}\n",
			topology.KindPeerNoClientAuth, topology.SeverityWarning, "never asks the client for a certificate"},
		{"4 forward_peer_identity without client_auth", "https://open.test {\n\ttls internal\n\tforward_peer_identity\n\treverse_proxy 127.0.0.1:9\n}\n",
			topology.KindPeerNoClientAuth, topology.SeverityWarning, "the backend always gets empty identity headers"},
		{"4 peer matcher without client_auth", "https://open.test {\n\ttls internal\n\t@ops peer dns:*.test\n\trespond @ops \"x\"\n}\n",
			topology.KindPeerNoClientAuth, topology.SeverityWarning, "the peer matcher never matches"},
		{"5 passthrough name of another site", "https://a.test {\n\ttls internal\n\tpassthrough {\n\t\tb.test 127.0.0.1:9\n\t}\n\trespond \"a\"\n}\nhttps://b.test {\n\ttls internal\n\trespond \"b\"\n}\n",
			topology.KindPassthroughHidesSite, topology.SeverityError, `passthrough takes the name b.test for every client`},
		{"5b alpn route on an mtls site's name", "https://a.test {\n\ttls internal\n\tpassthrough {\n\t\tmtls.test 127.0.0.1:9 {\n\t\t\talpn postgresql\n\t\t}\n\t}\n\trespond \"a\"\n}\n" + site(live, `respond "x"`),
			topology.KindALPNBypassesClientAuth, topology.SeverityWarning, "reaches 127.0.0.1:9 without the client certificate check of the site mtls.test"},
	} {
		rep := analyzeCaddyfile(t, tc.caddyfile)
		fs := findingsOf(rep, tc.kind)
		if len(fs) != 1 || fs[0].Severity != tc.sev || !strings.Contains(fs[0].Message, tc.msg) || fs[0].Fix == "" || fs[0].Path == "" {
			t.Errorf("%s: findings %+v, want one %s %s saying %q", tc.name, fs, tc.sev, tc.kind, tc.msg)
		}
		if rep.Count(topology.SeverityWarning) == 0 {
			t.Errorf("%s: --fail-on warning would pass", tc.name)
		}
	}
	for name, caddyfile := range map[string]string{
		"live_trust alone":           site(live, `peer_authorize dns:*.test`+"\n\tforward_peer_identity\n\treverse_proxy 127.0.0.1:9"),
		"live_trust, mode request":   site("\t\t\tmode request\n"+live, `respond "x"`),
		"peer after live_trust":      site(live+"\t\t\tverifier peer dns:*.test\n", `respond "x"`),
		"alpn route on a plain site": "https://a.test {\n\ttls internal\n\tpassthrough {\n\t\tb.test 127.0.0.1:9 {\n\t\t\talpn postgresql\n\t\t}\n\t}\n\trespond \"a\"\n}\nhttps://b.test {\n\ttls internal\n\trespond \"b\"\n}\n",
	} {
		rep := analyzeCaddyfile(t, caddyfile)
		for _, kind := range []string{topology.KindLiveTrustMisuse, topology.KindPeerNoClientAuth, topology.KindPassthroughHidesSite, topology.KindALPNBypassesClientAuth} {
			if fs := findingsOf(rep, kind); len(fs) > 0 {
				t.Errorf("%s: unexpected finding %+v", name, fs)
			}
		}
	}
}
