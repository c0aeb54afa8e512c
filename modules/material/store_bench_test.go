package material

import (
	"crypto/x509"
	"fmt"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

func manyCAs(b *testing.B, n int) []*x509.Certificate {
	certs := make([]*x509.Certificate, n)
	for i := range certs {
		certs[i] = testpki.NewCA(b, fmt.Sprintf("ca %d", i)).Cert
	}
	return certs
}

// BenchmarkLoadPEMBundle5000 reads a 5,000-certificate PEM bundle and builds
// its pool (the target: under 200 ms).
func BenchmarkLoadPEMBundle5000(b *testing.B) {
	data := testpki.CertsPEM(manyCAs(b, 5000)...)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		certs, err := ReadTrustAnchors(data, StoreOptions{})
		if err != nil || len(certs) != 5000 {
			b.Fatal(err, len(certs))
		}
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
}

// BenchmarkLoadJKS1000 reads a 1,000-entry JKS truststore (target: under
// 200 ms).
func BenchmarkLoadJKS1000(b *testing.B) {
	certs := manyCAs(b, 1000)
	m := make(map[string]*x509.Certificate, len(certs))
	for i, c := range certs {
		m[fmt.Sprintf("ca-%d", i)] = c
	}
	data := testpki.JKSTruststore(b, m, "changeit")
	b.ReportAllocs()
	for b.Loop() {
		got, err := ReadTrustAnchors(data, StoreOptions{Password: "changeit"})
		if err != nil || len(got) != 1000 {
			b.Fatal(err, len(got))
		}
	}
}

// BenchmarkCurrent is the per-handshake read of the current material.
func BenchmarkCurrent(b *testing.B) {
	r := &Reloadable[int]{}
	r.current.Store(&Loaded[int]{Value: 1})
	b.ReportAllocs()
	for b.Loop() {
		if r.Current() != 1 {
			b.Fatal()
		}
	}
}
