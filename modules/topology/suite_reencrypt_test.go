package topology

import (
	"strings"
	"testing"
)

// A passthrough handler after caddy-l4's tls handler is a plaintext leg
// unless its tls block re-encrypts; with a keystore identity it is mTLS.
func TestPassthroughReencryptIsNotPlaintext(t *testing.T) {
	cfg := func(tlsBlock string) string {
		return `{"apps":{"layer4":{"servers":{"db":{"listen":["10.0.0.1:5432"],"routes":[{"handle":[
			{"handler":"tls"},
			{"handler":"passthrough","upstreams":[{"dial":"10.0.0.7:5432"}]` + tlsBlock + `}
		]}]}}}}}`
	}
	for _, tc := range []struct {
		name, tls, mode string
		plaintext       bool
	}{
		{"no tls block", "", OutTCP, true},
		{"tls", `,"tls":{"ca":{"provider":"file","pem_files":["/nope.pem"]}}`, OutTLS, false},
		{"mtls", `,"tls":{"client_identity":{"source":"pem","certificate":"/nope.crt","key":"/nope.key"},"upstream_identity":["spiffe://example.org/db"]}`, OutMTLS, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Analyze([]byte(cfg(tc.tls)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			var modes []string
			for _, l := range rep.Listeners {
				for _, r := range l.Routes {
					for _, o := range r.Outbound {
						modes = append(modes, o.Mode)
					}
				}
			}
			if len(modes) != 1 || modes[0] != tc.mode {
				t.Errorf("outbound modes %v, want [%s]", modes, tc.mode)
			}
			plaintext := false
			for _, f := range rep.Findings {
				plaintext = plaintext || f.Kind == KindPlaintextLeg
			}
			if plaintext != tc.plaintext {
				t.Errorf("plaintext_leg finding: %v, want %v (findings: %s)", plaintext, tc.plaintext, kinds(rep))
			}
		})
	}
}

func kinds(rep *Report) string {
	var k []string
	for _, f := range rep.Findings {
		k = append(k, f.Kind)
	}
	return strings.Join(k, ",")
}
