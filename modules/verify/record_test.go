package verify

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/trustline/trustline/internal/testpki"
)

// TestHandshakeBufferIdentity pins the one assumption about Go's
// crypto/tls that Record and Lookup rely on (a reach into how crypto/tls
// works inside, not movable into internal/caddyinternals because it is
// Go's, not Caddy's): the leaf DER that a verifier is handed
// (VerifyPeerCertificate's rawCerts[0], which live_trust records) is the
// very buffer PeerCertificates[0].Raw points at in every ConnectionState
// of that connection, the one VerifyConnection sees and every later one
// (net/http's r.TLS, caddy-l4's connection states), so that a record
// keyed by that buffer is found by every reader. Written against go1.26;
// a Go release that copies the certificates between them fails here, for
// TLS 1.2 and 1.3 alike.
func TestHandshakeBufferIdentity(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	server := ca.Issue(t, testpki.DNS("server.test"), testpki.ServerOnly())
	client := ca.Issue(t, testpki.ClientOnly())
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		rec := &Verified{Chain: []*x509.Certificate{client.Cert, ca.Cert}}
		var recorded []byte
		var inVerifyConnection *Verified
		cfg := &tls.Config{
			Certificates: []tls.Certificate{server.TLS()},
			ClientAuth:   tls.RequireAnyClientCert,
			MinVersion:   version, MaxVersion: version,
			VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
				recorded = rawCerts[0]
				Record(rawCerts[0], rec)
				return nil
			},
			VerifyConnection: func(cs tls.ConnectionState) error {
				inVerifyConnection = Lookup(cs.PeerCertificates[0].Raw)
				return nil
			},
		}
		a, b := net.Pipe()
		srv := tls.Server(a, cfg)
		done := make(chan error, 1)
		go func() {
			c := tls.Client(b, &tls.Config{ServerName: "server.test", RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLS()},
				MinVersion: version, MaxVersion: version})
			done <- c.Handshake()
		}()
		if err := srv.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		first, second := srv.ConnectionState(), srv.ConnectionState()
		for name, raw := range map[string][]byte{"the ConnectionState after the handshake": first.PeerCertificates[0].Raw, "a later ConnectionState": second.PeerCertificates[0].Raw} {
			if unsafe.SliceData(raw) != unsafe.SliceData(recorded) || Lookup(raw) != rec {
				t.Errorf("%s, %s: PeerCertificates[0].Raw is not the buffer VerifyPeerCertificate was handed (rawCerts[0]): crypto/tls of %s no longer keeps one leaf buffer per handshake (written against go1.26), and verified-chain records are not found",
					tls.VersionName(version), name, runtime.Version())
			}
		}
		if inVerifyConnection != rec {
			t.Errorf("%s: VerifyConnection's PeerCertificates[0].Raw is not the recorded buffer (crypto/tls of %s, written against go1.26)", tls.VersionName(version), runtime.Version())
		}
		a.Close()
		b.Close()
	}
}

// TestVerifiedRecordBelongsToItsBuffer: a record vouches for the buffer it
// was made for and for nothing else: not a copy of the same bytes, and not
// a later buffer with the same bytes that lands at the same address once
// the first is collected (which an address-keyed table took as verified).
func TestVerifiedRecordBelongsToItsBuffer(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.ClientOnly())
	der := leaf.Cert.Raw
	rec := &Verified{Chain: []*x509.Certificate{leaf.Cert, ca.Cert}}

	buf := append([]byte(nil), der...)
	Record(buf, rec)
	if Lookup(buf) != rec {
		t.Fatal("the recorded buffer is not verified")
	}
	if Lookup(buf[:len(buf):len(buf)]) != rec {
		t.Fatal("another slice header of the same buffer is not verified")
	}
	if Lookup(append([]byte(nil), der...)) != nil {
		t.Fatal("a copy of the same bytes is verified")
	}
	runtime.KeepAlive(buf)

	reused := 0
	for range 50 {
		first := append([]byte(nil), der...)
		addr := uintptr(unsafe.Pointer(&first[0]))
		Record(first, rec)
		first = nil
		runtime.GC()
		later := make([][]byte, 200)
		for i := range later {
			later[i] = append([]byte(nil), der...)
			if uintptr(unsafe.Pointer(&later[i][0])) == addr {
				reused++
			}
			if Lookup(later[i]) != nil {
				t.Fatalf("a later buffer with the same bytes is reported verified (same address: %v)",
					uintptr(unsafe.Pointer(&later[i][0])) == addr)
			}
		}
		runtime.KeepAlive(later)
	}
	t.Logf("a recorded buffer's address was reused %d times in 50 rounds", reused)
}

// TestVerifiedRecordsAreCollected: records go away with their buffers.
func TestVerifiedRecordsAreCollected(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.ClientOnly())
	recordsLive := func() (n int) {
		records.Range(func(any, any) bool { n++; return true })
		return n
	}
	before := recordsLive()
	for range 500 {
		Record(append([]byte(nil), leaf.Cert.Raw...), &Verified{Chain: []*x509.Certificate{leaf.Cert}})
	}
	deadline := time.Now().Add(10 * time.Second)
	for recordsLive()-before > 10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records still live after their buffers were dropped", recordsLive()-before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestParseCacheHoldsOnlyVerifiedCopies: parsing what a client presented
// caches nothing (a refused handshake pins no memory); what Remember keeps
// is a copy of just the certificate, not of the message around it.
func TestParseCacheHoldsOnlyVerifiedCopies(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.ClientOnly())
	message := make([]byte, 256<<10) // a large handshake message holding the certificate
	der := message[1000 : 1000+copy(message[1000:], leaf.Cert.Raw)]

	parseCache.Lock()
	clear(parseCache.m)
	parseCache.bytes = 0
	parseCache.Unlock()

	c, err := ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if &c.Raw[0] == &der[0] || cap(c.Raw) > 2*len(der) {
		t.Fatalf("the parsed certificate aliases the handshake message (cap %d for %d bytes)", cap(c.Raw), len(der))
	}
	parseCache.RLock()
	n := len(parseCache.m)
	parseCache.RUnlock()
	if n != 0 {
		t.Fatalf("an unverified certificate was cached (%d entries)", n)
	}
	Remember([]*x509.Certificate{c})
	if again, _ := ParseCertificate(der); again != c {
		t.Fatal("a remembered certificate is parsed again")
	}
	parseCache.RLock()
	bytes := parseCache.bytes
	parseCache.RUnlock()
	if bytes != len(der) {
		t.Fatalf("cache accounts %d bytes, want %d", bytes, len(der))
	}
}
