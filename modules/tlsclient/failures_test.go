package tlsclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestFailureLine: the one line every TLS client of the suite
// writes, lead fields first, optional ones only when known.
func TestFailureLine(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	logger := zap.New(core)
	c := new(Client)
	c.fail(logger, &HandshakeError{Upstream: "b:443", Reason: ReasonBadCertificate, Presented: "none (no client_identity configured)", Err: errors.New("boom")}, "", nil)
	c.fail(logger, &HandshakeError{Upstream: "b:443", Reason: ReasonBadCertificate, Alert: "bad certificate", Presented: "CN=proxy (serial 1)", Err: errors.New("boom")}, "b.internal",
		[]zap.Field{zap.String("route", "db"), zap.String("client_addr", "10.0.0.1:5000")})
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

// TestRefusalAfterClose: a TLS 1.3 backend refuses our certificate after
// the handshake, with its first record; the connection's user closed it
// without reading that record (it was writing, or it gave up). Refusal
// still finds the alert, counts it and writes the failure line with the
// identity that was presented.
func TestRefusalAfterClose(t *testing.T) {
	p := newPKI(t)
	id, intruder := p.identity(t, "intruder", p.foreignCA)
	raw, _ := json.Marshal(filePool(p.trustFile(t)))
	l := liveFor(t, &reverseproxy.TLSConfig{CARaw: raw}, id, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	refused := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{p.serverLeaf.TLS()}, MinVersion: tls.VersionTLS13,
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.proxyCA.Pool()})
		refused <- sc.Handshake() // sends its alert
		_, _ = c.Read(make([]byte, 1))
	}()
	addr := ln.Addr().String()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := l.Handshake(context.Background(), conn, l.Config("127.0.0.1"), addr, zap.NewNop())
	if err != nil {
		t.Fatalf("our side of the handshake: %v", err)
	}
	if err := <-refused; err == nil {
		t.Fatal("the backend accepted a certificate of a CA it does not trust")
	}
	// the alert is on its way: wait until it is readable, without reading it
	waitReadable(t, conn)
	_ = tc.Close()

	core, logs := observer.New(zapcore.ErrorLevel)
	before := failures(addr, ReasonBadCertificate)
	err = l.Refusal(addr, tc, nil, zap.New(core), zap.String("route", "db"))
	if reason, alert := Classify(err); reason != ReasonBadCertificate || alert == "" {
		t.Fatalf("error %v: reason %q, alert %q; want bad_certificate and the backend's alert", err, reason, alert)
	}
	if failures(addr, ReasonBadCertificate) != before+1 {
		t.Fatal("refusal not counted")
	}
	e := logs.FilterMessage("upstream TLS handshake failed").All()
	if len(e) != 1 || e[0].ContextMap()["route"] != "db" || !strings.Contains(fmt.Sprint(e[0].ContextMap()["client_identity"]), intruder.Cert.SerialNumber.Text(16)) {
		t.Fatalf("failure lines %+v", logs.All())
	}
	// no refusal known: err as it was, nothing counted
	if err := l.Refusal(addr, nil, io.EOF, zap.New(core)); err != io.EOF || failures(addr, ReasonBadCertificate) != before+1 {
		t.Fatalf("a refusal found in %v", err)
	}
}

// waitReadable waits until conn has bytes to read, without reading them.
func waitReadable(t *testing.T, conn net.Conn) {
	t.Helper()
	raw, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n := 0
		_ = raw.Control(func(fd uintptr) {
			var buf [1]byte
			n, _, _ = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		})
		if n > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the backend's alert never arrived")
}
