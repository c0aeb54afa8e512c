package tlsclient

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestLogHandshakeFailure: the one line both the mtls transport and the
// passthrough handler write, lead fields first, optional ones only when
// known, a nil Client allowed.
func TestLogHandshakeFailure(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	logger := zap.New(core)
	var none *Client
	none.LogHandshakeFailure(logger, "b:443", "", ReasonBadCertificate, "", "none (no client_identity configured)", errors.New("boom"))
	(&Client{}).LogHandshakeFailure(logger, "b:443", "b.internal", ReasonBadCertificate, "bad certificate", "CN=proxy (serial 1)", errors.New("boom"),
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

func TestClassify(t *testing.T) {
	alert := func(text string) error {
		return fmt.Errorf("readLoopPeekFailLocked: %w", &net.OpError{Op: "remote error", Err: errors.New("tls: " + text)})
	}
	for _, tc := range []struct {
		err           error
		reason, alert string
	}{
		{alert("expired certificate"), ReasonBadCertificate, "expired certificate"},
		{alert("unknown certificate authority"), ReasonBadCertificate, "unknown certificate authority"},
		{alert("bad certificate"), ReasonBadCertificate, "bad certificate"},
		{alert("certificate required"), ReasonCertificateRequired, "certificate required"},
		{alert("handshake failure"), ReasonAlert, "handshake failure"},
		{errors.Join(&net.OpError{Op: "write", Err: errors.New("connection reset by peer")}, alert("access denied")), ReasonBadCertificate, "access denied"},
		{&verifyError{ReasonIdentityMismatch, errors.New("x")}, ReasonIdentityMismatch, ""},
		{x509.UnknownAuthorityError{}, ReasonUnknownAuthority, ""},
		{x509.HostnameError{}, ReasonNameMismatch, ""},
		{context.DeadlineExceeded, ReasonTimeout, ""},
		{errors.New("connection refused"), "", ""},
		{nil, "", ""},
	} {
		reason, alert := Classify(tc.err)
		if reason != tc.reason || alert != tc.alert {
			t.Errorf("Classify(%v) = %q, %q; want %q, %q", tc.err, reason, alert, tc.reason, tc.alert)
		}
	}
}
