package upstream

import (
	"errors"
	"slices"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestLogHandshakeFailure: the one line both the mtls transport and the
// passthrough handler write, lead fields first, optional ones only when
// known, a nil LiveTLS allowed.
func TestLogHandshakeFailure(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	logger := zap.New(core)
	var none *LiveTLS
	none.LogHandshakeFailure(logger, "b:443", "", ReasonBadCertificate, "", "none (no client_identity configured)", errors.New("boom"))
	(&LiveTLS{}).LogHandshakeFailure(logger, "b:443", "b.internal", ReasonBadCertificate, "bad certificate", "CN=proxy (serial 1)", errors.New("boom"),
		zap.String("route", "db"), zap.String("client_addr", "10.0.0.1:5000"))
	var keys [][]string
	for _, e := range logs.All() {
		if e.Message != "upstream TLS handshake failed" {
			t.Errorf("message %q", e.Message)
		}
		var k []string
		for _, f := range e.Context {
			k = append(k, f.Key)
		}
		keys = append(keys, k)
	}
	want := [][]string{
		{"upstream", "reason", "client_identity", "error"},
		{"route", "client_addr", "upstream", "reason", "client_identity", "server_name", "alert", "error"},
	}
	if len(keys) != 2 || !slices.Equal(keys[0], want[0]) || !slices.Equal(keys[1], want[1]) {
		t.Fatalf("fields %q, want %q", keys, want)
	}
}
