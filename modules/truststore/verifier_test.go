package truststore

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/verify"
)

// staticPool stands in for a pool source; the live sources are exercised
// end to end in integration/truststore_test.go.
type staticPool struct{ pool *x509.CertPool }

func (s staticPool) CertPool() *x509.CertPool { return s.pool }

// serverConfig wires the verifier the way Caddy's client_auth does: crypto/tls
// requires any certificate, VerifyConnection hands the raw chain to the
// verifier.
func serverConfig(t *testing.T, v *LiveTrust) *tls.Config {
	serverCA := testpki.NewCA(t, "server ca")
	srv := serverCA.Issue(t, testpki.DNS("localhost"), testpki.IP("127.0.0.1"))
	return &tls.Config{
		Certificates: []tls.Certificate{srv.TLS()},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			return v.VerifyClientCertificate(raw, cs.VerifiedChains)
		},
	}
}

func TestLiveTrustAndVerifiedLeaf(t *testing.T) {
	trusted := testpki.NewCA(t, "trusted")
	inter := trusted.NewIntermediate(t, "trusted inter")
	foreign := testpki.NewCA(t, "foreign")
	v := &LiveTrust{pool: staticPool{trusted.Pool()}, logger: zap.NewNop()}

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec := verify.Lookup(r.TLS.PeerCertificates[0].Raw); rec != nil {
			fmt.Fprintf(w, "verified %s %s", rec.Chain[0].Subject.CommonName, r.Proto)
			return
		}
		fmt.Fprintf(w, "unverified %s", r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = serverConfig(t, v)
	srv.StartTLS()
	defer srv.Close()

	get := func(leaf *testpki.Leaf, h2 bool) (string, error) {
		cfg := &tls.Config{InsecureSkipVerify: true} // the server's identity is not under test here
		if leaf != nil {
			cfg.Certificates = []tls.Certificate{leaf.TLS()}
		}
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}
		defer tr.CloseIdleConnections()
		var last string
		for range 3 { // several requests on one connection
			resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
			if err != nil {
				return "", err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
		}
		return last, nil
	}

	for _, h2 := range []bool{false, true} {
		proto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
		got, err := get(inter.Issue(t, testpki.CN("alice"), testpki.ClientOnly()), h2)
		if err != nil || got != "verified alice "+proto {
			t.Fatalf("%s: trusted client: %q, %v", proto, got, err)
		}
		if _, err := get(foreign.Issue(t, testpki.CN("mallory")), h2); err == nil {
			t.Fatalf("%s: a client of a foreign CA was accepted", proto)
		}
		if _, err := get(trusted.Issue(t, testpki.CN("old"), testpki.Expired()), h2); err == nil {
			t.Fatalf("%s: an expired client certificate was accepted", proto)
		}
		if _, err := get(trusted.Issue(t, testpki.CN("srv"), testpki.ServerOnly()), h2); err == nil {
			t.Fatalf("%s: a serverAuth-only certificate was accepted as a client", proto)
		}
	}

	// the same certificate, verified on one server, is not verified on a
	// server whose policy only requests certificates
	plain := httptest.NewUnstartedServer(srv.Config.Handler)
	plain.TLS = &tls.Config{Certificates: srv.TLS.Certificates, ClientAuth: tls.RequestClientCert}
	plain.StartTLS()
	defer plain.Close()
	alice := inter.Issue(t, testpki.CN("alice"), testpki.ClientOnly())
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{alice.TLS()}}}
	resp, err := (&http.Client{Transport: tr}).Get(plain.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "unverified") {
		t.Fatalf("unverified handshake reported as %q", b)
	}
}

// BenchmarkVerify compares the live verifier with crypto/tls's own client
// verification (what Caddy's client_auth trust_pool does) on the same
// chain: a P-256 leaf, an intermediate, a root.
func BenchmarkVerify(b *testing.B) {
	root := testpki.NewCA(b, "root")
	inter := root.NewIntermediate(b, "inter")
	leaf := inter.Issue(b, testpki.ClientOnly())
	raw := [][]byte{leaf.Cert.Raw, inter.Cert.Raw}
	b.Run("crypto_tls_builtin", func(b *testing.B) {
		// crypto/tls (RequireAndVerifyClientCert) parses the chain and verifies it
		pool := root.Pool()
		b.ReportAllocs()
		for b.Loop() {
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				certs[i], _ = x509.ParseCertificate(r)
			}
			opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			for _, c := range certs[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := certs[0].Verify(opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("live_trust", func(b *testing.B) {
		// crypto/tls (RequireAnyClientCert) parses the chain, then the verifier
		v := &LiveTrust{pool: staticPool{root.Pool()}, logger: zap.NewNop()}
		b.ReportAllocs()
		for b.Loop() {
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				certs[i], _ = x509.ParseCertificate(r)
			}
			if err := v.VerifyClientCertificate(raw, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestLiveTrustRefusalsPinNoMemory: refused handshakes leave nothing
// behind. Each refused chain here sits in its own 256 KiB message (what a
// client can send), as crypto/tls hands it to the verifier; a cache that
// kept the parsed certificates would keep every message alive.
func TestLiveTrustRefusalsPinNoMemory(t *testing.T) {
	trusted := testpki.NewCA(t, "trusted")
	v := &LiveTrust{pool: staticPool{trusted.Pool()}, logger: zap.NewNop()}
	const n = 400
	foreign := testpki.NewCA(t, "foreign")
	leaves := make([]*testpki.Leaf, n) // distinct certificates, as an attacker would send
	for i := range leaves {
		leaves[i] = foreign.Issue(t, testpki.ClientOnly())
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	for i := range n {
		der := leaves[i%len(leaves)].Cert.Raw
		message := make([]byte, 256<<10)
		leafRaw := message[64 : 64+copy(message[64:], der)]
		if err := v.VerifyClientCertificate([][]byte{leafRaw}, nil); err == nil {
			t.Fatal("a foreign client was accepted")
		}
	}
	after := heap()
	if grown := int64(after) - int64(before); grown > 16<<20 {
		t.Fatalf("%d refused handshakes left %d MiB live", n, grown>>20)
	}
}
