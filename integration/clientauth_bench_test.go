package integration

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// BenchmarkClientAuthHandshake measures full mTLS handshakes plus one
// request against the real binary, side by side in one run: Caddy's
// built-in client verification (client_auth trust_pool, read once) and
// the live_trust verifier over the same CA file (read on every handshake).
//
//	go test ./integration -run XXX -bench ClientAuthHandshake -benchtime 3s -count 5
func BenchmarkClientAuthHandshake(b *testing.B) {
	dir := b.TempDir()
	ca := testpki.NewCA(b, "clients")
	caFile := testpki.WriteFile(b, dir, "ca.pem", ca.CertPEM())
	srvCA := testpki.NewCA(b, "server ca")
	srv := srvCA.Issue(b, testpki.DNS("localhost"), testpki.ServerOnly())
	certFile, keyFile := srv.WriteFiles(b, dir, "server")
	builtin, live := bench.FreeAddr(b), bench.FreeAddr(b)
	site := func(addr, clientAuth string) string {
		return "https://localhost:" + bench.Port(addr) + " {\n\ttls " + certFile + " " + keyFile + " {\n\t\tclient_auth {\n\t\t\t" + clientAuth + "\n\t\t}\n\t}\n\trespond ok\n}\n"
	}
	bench.Start(b, "{\n\tadmin {$TL_ADMIN}\n\tskip_install_trust\n\tauto_https disable_redirects\n}\n"+
		site(builtin, "trust_pool file "+caFile)+site(live, "verifier live_trust bundle "+caFile))
	leaf := ca.Issue(b, testpki.ClientOnly())
	for _, tc := range []struct{ name, addr string }{{"builtin_trust_pool", builtin}, {"live_trust", live}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := &tls.Config{RootCAs: srvCA.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{leaf.TLS()}}
			url := "https://" + tc.addr + "/"
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					// a new transport per request: a full handshake each time
					tr := &http.Transport{TLSClientConfig: cfg.Clone(), DisableKeepAlives: true}
					resp, err := (&http.Client{Transport: tr}).Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					tr.CloseIdleConnections()
				}
			})
		})
	}
}
