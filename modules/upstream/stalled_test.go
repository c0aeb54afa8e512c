package upstream

import (
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
)

// TestStalledBackend: a handshake that the backend never answers ends at
// the TLS handshake timeout with reason timeout, counted. It used to hang
// until the backend went away: the timeout closes the connection, and
// closing it waited for the handshake's own blocked read.
func TestStalledBackend(t *testing.T) {
	p := newPKI(t)
	addr := testpki.StalledServer(t)
	ctx := testCtx(t)
	id, _ := p.identity(t, "proxy", p.proxyCA)
	tr, err := newTransport(t, ctx, map[string]any{"client_identity": id,
		"tls": map[string]any{"ca": filePool(p.trustFile(t)), "handshake_timeout": int64(300 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	before := failures(t, ctx, addr, "timeout")
	done := make(chan error, 1)
	go func() {
		_, err := get(t, tr, "https://"+addr)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "(timeout)") {
			t.Fatalf("error %v, want a handshake failure with reason timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handshake with a backend that never answers outlived its 300ms timeout by 10s")
	}
	if failures(t, ctx, addr, "timeout") != before+1 {
		t.Fatal("the timeout was not counted")
	}
}
