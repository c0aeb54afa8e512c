package passthrough

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/trustline/trustline/internal/testpki"
)

// validate provisions a JSON config with Caddy's own code, as `caddy
// validate` and an admin /load do.
func validate(t *testing.T, cfg string) error {
	t.Helper()
	var c caddy.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatalf("%v\n%s", err, cfg)
	}
	return caddy.Validate(&c)
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
