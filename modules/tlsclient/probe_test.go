package tlsclient

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/trustline/trustline/internal/testpki"
)

// TestProbeNotCounted: an operator's check (`caddy trustline explain
// --upstream`, ctx marked with Probe) that fails is returned, classified,
// but neither counted in trustline_upstream_handshake_failures_total nor
// logged as `upstream TLS handshake failed`: it is no traffic.
func TestProbeNotCounted(t *testing.T) {
	p := newPKI(t)
	addr := testpki.ClientSerialServer(t, p.serverLeaf, p.proxyCA)
	id, _ := p.identity(t, "proxy", p.proxyCA)
	foreign, _ := json.Marshal(filePool(testpki.WriteFile(t, p.dir, "foreign.pem", p.foreignCA.CertPEM())))
	l := liveFor(t, &reverseproxy.TLSConfig{CARaw: foreign}, id, nil)
	core, logs := observer.New(zapcore.DebugLevel)

	before := failures(addr, ReasonUnknownAuthority)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = l.Handshake(Probe(ctx), conn, l.Config("127.0.0.1"), addr, zap.New(core))
	var he *HandshakeError
	if !errors.As(err, &he) || he.Reason != ReasonUnknownAuthority {
		t.Fatalf("error %v, want a handshake error with reason unknown_authority", err)
	}
	if got := failures(addr, ReasonUnknownAuthority); got != before {
		t.Errorf("a probe's failure moved trustline_upstream_handshake_failures_total from %v to %v", before, got)
	}
	if n := logs.FilterMessage("upstream TLS handshake failed").Len(); n != 0 {
		t.Errorf("a probe's failure was logged as a traffic failure (%d line(s))", n)
	}
}
