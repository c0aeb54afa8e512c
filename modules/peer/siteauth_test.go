package peer

import (
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/trustline/trustline/internal/testcaddy"
)

// loadWarnings provisions a JSON config with Caddy's own code (as `caddy
// validate` and an admin /load do) and returns the WARN lines.
func loadWarnings(t *testing.T, apps string) []map[string]any {
	t.Helper()
	warnings, err := testcaddy.Validate(t, []byte(`{"admin": {"disabled": true}, "apps": `+apps+`}`))
	if err != nil {
		t.Fatal(err)
	}
	return warnings
}

// TestPeerOnSiteWithoutClientAuth: peer_authorize, forward_peer_identity
// (peer_headers) or a peer matcher on a site whose TLS connection policy
// has no client_auth never see an identity; the config loads with a
// warning naming the site and the consequence (issue 22, item 4). On a
// site with client_auth, nothing is said.
func TestPeerOnSiteWithoutClientAuth(t *testing.T) {
	authorize := `{"handler": "peer_authorize", "dns": ["*.test"]}`
	headers := `{"handler": "peer_headers", "client_cert": true}`
	matcher := `{"handler": "subroute", "routes": [{"match": [{"peer": {"dns": ["*.test"]}}], "handle": [{"handler": "static_response", "body": "x"}]}]}`
	server := func(handler string, policies string) string {
		return `{"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "automatic_https": {"disable": true},
			"routes": [
				{"match": [{"host": ["open.test"]}], "handle": [` + handler + `]},
				{"match": [{"host": ["mtls.test"]}], "handle": [` + strings.ReplaceAll(handler, "*.test", "*.mtls.test") + `]}
			],
			"tls_connection_policies": ` + policies + `}}}}`
	}
	mtlsOnly := `[{"match": {"sni": ["mtls.test"]}, "client_authentication": {"mode": "require"}}, {}]`
	for _, tc := range []struct {
		name, handler, consequence string
	}{
		{"peer_authorize", authorize, "every request is refused (403)"},
		{"forward_peer_identity", headers, "the identity headers it forwards are always absent"},
		{"peer matcher", matcher, "it never matches"},
	} {
		warns := loadWarnings(t, server(tc.handler, mtlsOnly))
		var got []string
		for _, w := range warns {
			if strings.Contains(w["msg"].(string), "never asks for a client certificate") {
				got = append(got, w["msg"].(string)+" hosts="+strings.Join(strs(w["hosts"]), ","))
			}
		}
		if len(got) != 1 || !strings.Contains(got[0], tc.consequence) || !strings.HasSuffix(got[0], "hosts=open.test") {
			t.Errorf("%s: warnings %q, want one for open.test saying %q", tc.name, got, tc.consequence)
		}
		// a plain HTTP server never asks either
		warns = loadWarnings(t, `{"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "automatic_https": {"disable": true},
			"routes": [{"handle": [`+tc.handler+`]}]}}}}`)
		if len(warns) != 1 || !strings.Contains(warns[0]["msg"].(string), tc.consequence) {
			t.Errorf("%s on a plain HTTP server: warnings %v", tc.name, warns)
		}
	}
}

func strs(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, s := range l {
		out = append(out, s.(string))
	}
	return out
}
