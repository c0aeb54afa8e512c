package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustline/trustline/integration/bench"
)

// TestSPIFFEWorkloadTCPRefused: `caddy validate` (it provisions) refuses a
// spiffe_workload socket tcp:// to another host, from the Caddyfile and
// from SPIFFE_ENDPOINT_SOCKET alike, saying what to write; nothing is
// dialed (10.0.0.5 need not exist).
func TestSPIFFEWorkloadTCPRefused(t *testing.T) {
	c := bench.New(t, "SPIFFE_ENDPOINT_SOCKET=tcp://10.0.0.5:8081")
	for name, block := range map[string]string{
		"socket option": "socket tcp://10.0.0.5:8081",
		"environment":   "wait 1s",
	} {
		file := filepath.Join(c.Dir, strings.ReplaceAll(name, " ", "_")+".Caddyfile")
		if err := os.WriteFile(file, []byte(`{
	skip_install_trust
}
https://api.example.org {
	tls internal {
		client_auth {
			verifier live_trust spiffe_workload {
				`+block+`
			}
		}
	}
	respond "ok"
}
`), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := c.Command(t, "validate", "--config", file, "--adapter", "caddyfile")
		if err == nil || !strings.Contains(out, "socket tcp://10.0.0.5:8081 is plaintext, unauthenticated gRPC to another host") ||
			!strings.Contains(out, "set insecure_tcp") {
			t.Errorf("%s: caddy validate (%v):\n%s", name, err, out)
		}
	}
}
