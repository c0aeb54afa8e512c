package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// TestRefusalsCounted: every handshake-time verdict of the suite's
// verifiers is counted by verifier, verdict and reason class, and the
// refusal's log line carries the same reason: "clients suddenly failing
// mTLS" is one alert on trustline_client_verdicts_total{verdict="refused"}.
// Before, a client refused by live_trust appeared in no metric.
func TestRefusalsCounted(t *testing.T) {
	p := newPeerPKI(t)
	other := testpki.NewCA(t, "Some Other CA")
	site := bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[2]s %[3]s {
		client_auth {
			verifier live_trust bundle %[4]s
			verifier peer spiffe://example.org/ops/*
		}
	}
	respond "in"
}
`, bench.Port(site), p.srvCert, p.srvKey, p.rootFile))
	cl := chainClient{serverCA: p.root.Pool()}
	cases := []struct {
		name     string
		leaf     *testpki.Leaf
		verifier string
		reason   string
	}{
		{"admitted", p.leaves["alice"], "", ""},
		{"unknown authority", other.Issue(t, testpki.URI("spiffe://example.org/ops/x"), testpki.ClientOnly()), "live_trust", "unknown_authority"},
		{"expired", p.leaves["expired"], "live_trust", "expired"},
		{"server-only", p.leaves["serveronly"], "live_trust", "bad_usage"},
		{"not allowed", p.leaves["bob"], "peer", "not_allowed"},
	}
	for _, tc := range cases {
		_, _, err := cl.get(site, "/", tc.leaf, tc.leaf.Chain...)
		if (tc.reason == "") != (err == nil) {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	m := c.Metrics(t)
	for _, tc := range cases {
		line := `trustline_client_verdicts_total{reason="",verdict="admitted",verifier="live_trust"}`
		if tc.reason != "" {
			line = fmt.Sprintf(`trustline_client_verdicts_total{reason=%q,verdict="refused",verifier=%q} 1`, tc.reason, tc.verifier)
			c.WaitLog(t, `"reason":"`+tc.reason+`"`, 2*time.Second)
		}
		if !strings.Contains(m, line) {
			t.Errorf("%s: /metrics lacks %s", tc.name, line)
		}
	}
}
