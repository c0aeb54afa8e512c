package verify

import (
	"crypto/x509"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/trustline/trustline/internal/testpki"
)

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
	before := recordsLive.Load()
	for range 500 {
		Record(append([]byte(nil), leaf.Cert.Raw...), &Verified{Chain: []*x509.Certificate{leaf.Cert}})
	}
	deadline := time.Now().Add(10 * time.Second)
	for recordsLive.Load()-before > 10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records still live after their buffers were dropped", recordsLive.Load()-before)
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
