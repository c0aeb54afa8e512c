package topology

import (
	"slices"
	"testing"
)

// TestPeerHeadersListed: the report lists every header forward_peer_identity
// (peer_headers) sets upstream, the configured `header` ones included, not
// only those of the identity families it knows.
func TestPeerHeadersListed(t *testing.T) {
	for _, tc := range []struct {
		name, handler string
		want          []string
	}{
		{"bare directive", `{"handler":"peer_headers","client_cert":true,"client_cert_chain":true}`,
			[]string{"Client-Cert", "Client-Cert-Chain"}},
		{"every option", `{"handler":"peer_headers","client_cert":true,"xfcc":{"by":"spiffe://example.test/edge"},"pem_header":"X-SSL-Client-Cert",
			"headers":{"X-Spiffe-Id":"{peer.spiffe_id}","X-Tenant":"{peer.uri}"},"strip":["X-SSL-Client-Verify"]}`,
			[]string{"Client-Cert", "X-Forwarded-Client-Cert", "X-SSL-Client-Cert", "X-Spiffe-Id", "X-Tenant"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":8443"],"tls_connection_policies":[{"client_authentication":{"ca":{"provider":"inline"}}}],"routes":[{"handle":[` +
				tc.handler + `,{"handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:8080"}]}]}]}}}}}`
			rep, err := Analyze([]byte(cfg), Options{})
			if err != nil {
				t.Fatal(err)
			}
			out := rep.Listeners[0].Routes[0].Outbound[0]
			got := slices.Clone(out.IdentityHeaders)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("identity headers %v, want %v", got, tc.want)
			}
			for _, f := range rep.Findings {
				if f.Kind == KindIdentityHeaders && f.Severity != SeverityInfo {
					t.Errorf("peer_headers strips what it sets: %+v", f)
				}
			}
		})
	}
}
