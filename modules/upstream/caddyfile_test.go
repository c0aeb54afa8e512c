package upstream

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary blocks to the transport's parser
// (and through it to the http transport's and the keystore sources'): it
// must return an error or a config, never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, s := range []string{
		"mtls {\n client_identity pem /a /b\n trust_pool file /ca.pem\n upstream_identity spiffe://td/x\n}",
		"mtls {\n versions 3\n}",
		"mtls {\n keepalive 30s\n tls_server_name x\n client_identity internal spiffe://td/p {\n lifetime 1h\n }\n}",
		"mtls {\n}",
		"mtls x",
		"mtls {\n trust_pool\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tokens, err := caddyfile.Tokenize([]byte(s), "Caddyfile")
		if err != nil || len(tokens) == 0 {
			return
		}
		var tr Transport
		_ = tr.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}

func TestUnmarshalErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"mtls {\n client_identity pem /a /b\n client_identity pem /c /d\n}", "duplicate option 'client_identity'"},
		{"mtls {\n versions 3\n}", "versions 3"},
		{"mtls {\n bogus 1\n}", "transport mtls: "},
		{"mtls extra", "unexpected argument 'extra'"},
		{"mtls {\n trust_pool\n}", "transport mtls: trust_pool: expected a trust pool source (bundle, "},
		{"mtls {\n trust_pool nope\n}", "transport mtls: trust_pool: unknown trust pool source 'nope' (expected one of: bundle, "},
		{"mtls {\n trust_pool file /a.pem\n tls_trust_pool file /b.pem\n}", "trust_pool (line 2) and tls_trust_pool both given"},
		{"mtls {\n upstream_identity\n}", "needs at least one"},
		{"mtls {\n upstream_identity http://x\n}", "upstream_identity \"http://x\""},
		{"mtls {\n client_identity pem /a /b\n tls_client_auth /c /d\n}", "client_identity and tls_client_auth both set"},
		{"mtls {\n upstream_identity spiffe://td/x\n tls_insecure_skip_verify\n}", "tls_insecure_skip_verify turns it off"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var tr Transport
			err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
