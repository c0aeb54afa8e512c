package truststore

import (
	"encoding/base64"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-l4/modules/l4tls"

	"github.com/trustline/trustline/internal/testcaddy"
	"github.com/trustline/trustline/internal/testpki"
	_ "github.com/trustline/trustline/modules/peer"
)

// validate provisions a JSON config with Caddy's own code, as `caddy
// validate` and an admin /load do.
func validate(t *testing.T, cfg string) error {
	t.Helper()
	_, err := testcaddy.Validate(t, []byte(cfg))
	return err
}

// TestLiveTrustMisuseRefusedAtLoad: the client_auth settings that make
// every client fail with live_trust are refused when the config loads,
// whether the policy is an HTTP server's or a layer-4 tls handler's; the
// working ones load.
func TestLiveTrustMisuseRefusedAtLoad(t *testing.T) {
	ca := base64.StdEncoding.EncodeToString(testpki.NewCA(t, "clients").Cert.Raw)
	live := `{"verifier": "live_trust", "trust_pool": {"provider": "inline", "trusted_ca_certs": ["` + ca + `"]}}`
	peer := `{"verifier": "peer", "dns": ["*.test"]}`
	pool := `"ca": {"provider": "inline", "trusted_ca_certs": ["` + ca + `"]}, `
	httpConfig := func(clientAuth string) string {
		return `{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {
			"listen": ["127.0.0.1:0"], "automatic_https": {"disable": true},
			"tls_connection_policies": [{"match": {"sni": ["other.test"]}}, {"client_authentication": {` + clientAuth + `}}]
		}}}}}`
	}
	l4Config := func(clientAuth string) string {
		return `{"admin": {"disabled": true}, "apps": {"layer4": {"servers": {"s": {"listen": ["127.0.0.1:0"],
			"routes": [{"handle": [{"handler": "tls", "connection_policies": [{"client_authentication": {` + clientAuth + `}}]}]}]
		}}}}}`
	}
	for _, tc := range []struct {
		name, clientAuth, want string
	}{
		{"no mode", `"verifiers": [` + live + `]`, ""},
		{"mode require", `"mode": "require", "verifiers": [` + live + `]`, ""},
		{"mode request", `"mode": "request", "verifiers": [` + live + `]`, ""},
		{"peer after live_trust", `"verifiers": [` + live + `, ` + peer + `]`, ""},
		{"trust_pool without live_trust", pool + `"verifiers": [` + peer + `]`, ""},
		{"mode require_and_verify", `"mode": "require_and_verify", "verifiers": [` + live + `]`, "`mode require_and_verify` with `verifier live_trust`"},
		{"mode verify_if_given", `"mode": "verify_if_given", "verifiers": [` + live + `]`, "`mode verify_if_given` with `verifier live_trust`"},
		{"trust_pool", pool + `"verifiers": [` + live + `]`, "`trust_pool` (JSON: ca) together with `verifier live_trust`"},
		{"trust_pool mode require", pool + `"mode": "require", "verifiers": [` + live + `]`, "remove trust_pool"},
		{"trusted_ca_certs", `"trusted_ca_certs": ["` + ca + `"], "verifiers": [` + live + `]`, "remove trust_pool"},
		{"peer before live_trust", `"verifiers": [` + peer + `, ` + live + `]`, "list `verifier live_trust` first"},
	} {
		for form, cfg := range map[string]string{"http": httpConfig(tc.clientAuth), "layer4": l4Config(tc.clientAuth)} {
			err := validate(t, cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s (%s): refused: %v", tc.name, form, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%s (%s): error %v, want one containing %q", tc.name, form, err, tc.want)
			}
		}
	}
}

// TestCheckClientAuthWithoutLiveTrust: without live_trust there is
// nothing to check (the topology report judges those policies).
func TestCheckClientAuthWithoutLiveTrust(t *testing.T) {
	if err := CheckClientAuth("require_and_verify", false, []string{"peer"}); err != nil {
		t.Error(err)
	}
}
