package redis

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/tlsclient"
)

// TestTLSLivePool: the trust pool is the one current at each new
// connection (tlsclient.Client verifies against it), and the client
// identity is presented from the config the client took over.
func TestTLSLivePool(t *testing.T) {
	f := startTLSRedis(t)
	testpki.SetPool("redis-live", f.ca.Pool())
	r := &Redis{Addresses: []string{f.addr}, TLS: &TLS{
		TrustPoolRaw: json.RawMessage(`{"provider":"testpki_swappable","name":"redis-live"}`),
		CertFile:     f.clientCert, KeyFile: f.clientKey,
	}}
	if err := provision(t, r); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, r)

	handshake := func() error {
		tc, err := newDialer(r.TLS, 5*time.Second, false, nil).dial(context.Background(), "tcp", f.addr)
		if err != nil {
			return err
		}
		defer tc.Close()
		if len(tc.(*tlsclient.Conn).ConnectionState().PeerCertificates) == 0 {
			t.Fatal("no server certificate")
		}
		return nil
	}
	testpki.SetPool("redis-live", f.other.Pool())
	if err := handshake(); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("Redis's certificate against another CA's pool: %v", err)
	}
	testpki.SetPool("redis-live", f.ca.Pool())
	if err := handshake(); err != nil {
		t.Fatalf("back to Redis's CA: %v", err)
	}
}
