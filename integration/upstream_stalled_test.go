package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// TestUpstreamStalledBackend: a backend that accepts the TCP connection
// and never answers the ClientHello (a hung TLS stack, a black hole behind
// a load balancer). The mtls transport gives up at tls_timeout: 502,
// `upstream TLS handshake failed` with reason timeout, counted. It used
// to hang until the client gave up (the timeout's close of the connection
// waited for the handshake's own blocked read), keeping the connection.
func TestUpstreamStalledBackend(t *testing.T) {
	p := newUpPKI(t)
	backend := testpki.StalledServer(t)
	_, cert, key := p.client(t, "proxy", p.proxyCA)
	front := bench.FreeAddr(t)
	c := bench.Start(t, upFrontCaddyfile(front,
		upProxy(backend, "client_identity pem "+cert+" "+key+"\ntrust_pool file "+p.backendCAFile+"\ntls_timeout 1s")))

	start := time.Now()
	if status, body := upGet(t, "http://"+front+"/"); status != 502 {
		t.Fatalf("stalled backend: %d %q, want 502", status, body)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the 502 came after %s, with tls_timeout 1s", took)
	}
	c.WaitLog(t, `"reason":"timeout"`, 5*time.Second)
	if !strings.Contains(c.Log(), `"upstream TLS handshake failed"`) {
		t.Errorf("no failure line:\n%s", ptmGrep(c.Log(), backend))
	}
	want := `trustline_upstream_handshake_failures_total{reason="timeout",upstream="` + backend + `"} 1`
	if metrics := c.Metrics(t); !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %s:\n%s", want, ptmGrep(metrics, "trustline_upstream_handshake_failures_total"))
	}
}
