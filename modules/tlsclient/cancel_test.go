package tlsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestHandshakeCanceled: a dial called off while its handshake runs (net/http
// cancels the dials it no longer needs, as after a trust pool's change
// moves requests to a fresh pool) is not a failed handshake: reason
// canceled, not counted, and logged at debug level only.
func TestHandshakeCanceled(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hello := make(chan struct{})
	go func() { // a backend that reads the ClientHello and never answers
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Read(make([]byte, 1))
		close(hello)
		_, _ = io.Copy(io.Discard, c) // until the client goes
	}()
	addr := l.Addr().String()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-hello:
		case <-time.After(10 * time.Second):
		}
		cancel()
	}()
	before := failures(addr, ReasonOther) + failures(addr, ReasonCanceled)
	core, logs := observer.New(zapcore.DebugLevel)
	_, err = (&Client{}).Handshake(ctx, conn, &tls.Config{ServerName: "backend.test"}, addr, zap.New(core))
	var he *HandshakeError
	if !errors.As(err, &he) || he.Reason != ReasonCanceled || !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want a handshake error with reason canceled", err)
	}
	if got := failures(addr, ReasonOther) + failures(addr, ReasonCanceled); got != before {
		t.Fatalf("a canceled dial counted as a handshake failure (%v, was %v)", got, before)
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Fatalf("%d error lines for a canceled dial", n)
	}
	if e := logs.FilterMessage("upstream TLS handshake canceled").All(); len(e) != 1 || e[0].Level != zapcore.DebugLevel {
		t.Fatalf("debug line: %+v", logs.All())
	}
	if r, _ := Classify(context.Canceled); r != ReasonCanceled {
		t.Fatalf("Classify(context.Canceled) = %q", r)
	}
}
