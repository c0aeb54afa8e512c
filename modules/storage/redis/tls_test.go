package redis

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

// TestTLSLivePool: the trust pool is the one current at each new
// connection (upstream.LiveTLS verifies against it), and the client
// identity is presented from the config LiveTLS took over.
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
		conn, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tc := tls.Client(conn, r.TLS.clientConfig(f.addr))
		if err := tc.Handshake(); err != nil {
			return err
		}
		if len(tc.ConnectionState().PeerCertificates) == 0 {
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
