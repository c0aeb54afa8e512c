package passthrough

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/trustline/trustline/internal/testcaddy"
	"github.com/trustline/trustline/internal/testpki"
)

// validate provisions a JSON config with Caddy's own code, as `caddy
// validate` and an admin /load do.
func validate(t *testing.T, cfg string) error {
	t.Helper()
	_, err := testcaddy.Validate(t, []byte(cfg))
	return err
}

// TestTerminateTLSLiveTrustChecked: live_trust's load-time check of its
// client_auth (truststore.CheckClientAuth) finds the policy of a
// terminate_tls handler too.
func TestTerminateTLSLiveTrustChecked(t *testing.T) {
	ca := base64.StdEncoding.EncodeToString(testpki.NewCA(t, "clients").Cert.Raw)
	cfg := func(mode string) string {
		return `{"admin": {"disabled": true}, "apps": {"layer4": {"servers": {"s": {"listen": ["127.0.0.1:0"],
			"routes": [{"handle": [{"handler": "terminate_tls", "connection_policies": [{"client_authentication": {` + mode + `
				"verifiers": [{"verifier": "live_trust", "trust_pool": {"provider": "inline", "trusted_ca_certs": ["` + ca + `"]}}]}}]}]}]
		}}}}}`
	}
	if err := validate(t, cfg(``)); err != nil {
		t.Fatalf("live_trust without a mode: %v", err)
	}
	if err := validate(t, cfg(`"mode": "require_and_verify",`)); err == nil || !strings.Contains(err.Error(), "`mode require_and_verify` with `verifier live_trust`") {
		t.Fatalf("mode require_and_verify: %v", err)
	}
}

// wrapperConfig is an HTTP server with sites a.test and b.test (b.test
// with client_auth) and a passthrough listener wrapper with the routes.
func wrapperConfig(routes string) string {
	return `{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {
		"listen": ["127.0.0.1:0"], "automatic_https": {"disable": true},
		"listener_wrappers": [{"wrapper": "layer4", "routes": [` + routes + `]}, {"wrapper": "tls"}],
		"routes": [
			{"match": [{"host": ["a.test"]}], "handle": [{"handler": "static_response", "body": "a"}]},
			{"match": [{"host": ["b.test"]}], "handle": [{"handler": "static_response", "body": "b"}]},
			{"match": [{"host": ["*.wild.test"]}], "handle": [{"handler": "static_response", "body": "wild"}]}
		],
		"tls_connection_policies": [
			{"match": {"sni": ["b.test"]}, "client_authentication": {"mode": "require"}},
			{}
		]
	}}}}}`
}

// ptRoute is a passthrough route for the names, restricted to the ALPN
// protocols if any, with extra matchers beside the clienthello one.
func ptRoute(name string, sni, alpn []string, extra string) string {
	m, _ := json.Marshal(MatchClientHello{SNI: sni, ALPN: alpn})
	return `{"match": [{"clienthello": ` + string(m) + extra + `}], "handle": [{"handler": "passthrough", "route": "` + name + `", "upstreams": [{"dial": "127.0.0.1:9"}]}]}`
}

// TestPassthroughNameOfAnotherSite: a passthrough name that a site of the
// same HTTP server serves hides that site; the site-block form already
// refuses the site's own names at adapt time, this is every site of the
// server, at load (issue 22, item 5). A wildcard site that keeps other
// names, an ALPN-restricted route and a name excluded by `not` load.
func TestPassthroughNameOfAnotherSite(t *testing.T) {
	for _, tc := range []struct {
		name, routes, want string
	}{
		{"exact name of another site", ptRoute("b", []string{"B.test"}, nil, ""),
			`passthrough route "b" takes server name "B.test", which the site "b.test" on the same HTTP server also serves`},
		{"wildcard covering a site", ptRoute("any", []string{"*.test"}, nil, ""), `takes server name "*.test", which the site "a.test"`},
		{"same wildcard as a site", ptRoute("w", []string{"*.wild.test"}, nil, ""), `the site "*.wild.test"`},
		{"one name under a wildcard site", ptRoute("db", []string{"db.wild.test"}, nil, ""), ""},
		{"other name", ptRoute("c", []string{"c.test"}, nil, ""), ""},
		{"alpn restricted", ptRoute("pg", []string{"a.test"}, []string{"postgresql"}, ""), ""},
		{"excluded by not", ptRoute("any", []string{"*.test"}, nil, `, "not": [{"clienthello": {"sni": ["a.test", "b.test"]}}]`), ""},
		{"negated only", `{"match": [{"not": [{"clienthello": {"sni": ["a.test"]}}]}], "handle": [{"handler": "refuse"}]}`, ""},
	} {
		err := validate(t, wrapperConfig(tc.routes))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestALPNRouteBesideClientAuthSite: an ALPN-restricted route that takes
// the name of a site with client_auth loads (ALPN multiplexing is
// allowed), with a warning that such clients skip the site's client
// certificate check (issue 22, item 5b).
func TestALPNRouteBesideClientAuthSite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routes string
		warn   bool
	}{
		{"mtls site", ptRoute("pg", []string{"b.test"}, []string{"postgresql", "x"}, ""), true},
		{"site without client_auth", ptRoute("pg", []string{"a.test"}, []string{"postgresql"}, ""), false},
	} {
		all, err := testcaddy.Validate(t, []byte(wrapperConfig(tc.routes)))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var warnings []map[string]any
		for _, w := range all {
			if w["msg"] == msgALPNBypass {
				warnings = append(warnings, w)
			}
		}
		if !tc.warn {
			if len(warnings) > 0 {
				t.Errorf("%s: warned %v", tc.name, warnings[0])
			}
			continue
		}
		if len(warnings) != 1 {
			t.Fatalf("%s: %d warnings, want 1", tc.name, len(warnings))
		}
		f := warnings[0]
		if f["route"] != "pg" || f["server_name"] != "b.test" || f["site"] != "b.test" || fmt.Sprint(f["alpn"]) != "[postgresql x]" {
			t.Errorf("%s: warning fields %v", tc.name, f)
		}
	}
}
