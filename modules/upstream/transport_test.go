package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"github.com/trustline/trustline/internal/caddyinternals"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/tlsclient"
)

func init() {
}

func testCtx(t testing.TB) caddy.Context {
	t.Helper()
	base, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(base)
	t.Cleanup(cancel)
	return ctx
}

func newTransport(t testing.TB, ctx caddy.Context, cfg map[string]any) (*Transport, error) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := ctx.LoadModuleByID("http.reverse_proxy.transport.mtls", raw)
	if err != nil {
		return nil, err
	}
	return mod.(*Transport), nil
}

// backend is a TLS server that requires a client certificate from
// clientCAs and answers with the serial of the one it got.
func backend(t testing.TB, serverLeaf *testpki.Leaf, clientCAs *x509.CertPool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Proto", r.Proto)
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].SerialNumber.String())
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverLeaf.TLS()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func get(t testing.TB, tr http.RoundTripper, url string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status + ": " + string(body))
	}
	return string(body), nil
}

// failures reads trustline_upstream_handshake_failures_total{upstream,
// reason} from ctx's metrics registry (0 before a transport registered it).
func failures(t testing.TB, ctx caddy.Context, upstream, reason string) float64 {
	t.Helper()
	mfs, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "trustline_upstream_handshake_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["upstream"] == upstream && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

type pki struct {
	backendCA, proxyCA, foreignCA *testpki.CA
	serverLeaf                    *testpki.Leaf
	dir                           string
}

func newPKI(t testing.TB) *pki {
	p := &pki{
		backendCA: testpki.NewCA(t, "backend root"),
		proxyCA:   testpki.NewCA(t, "proxy root"),
		foreignCA: testpki.NewCA(t, "foreign root"),
		dir:       t.TempDir(),
	}
	p.serverLeaf = p.backendCA.NewIntermediate(t, "backend inter").Issue(t,
		testpki.CN("backend"), testpki.IP("127.0.0.1"), testpki.DNS("backend.test"),
		testpki.URI("spiffe://example.org/backend"), testpki.ServerOnly())
	return p
}

func (p *pki) trustFile(t testing.TB) string {
	return testpki.WriteFile(t, p.dir, "backend-ca.pem", p.backendCA.CertPEM())
}

func (p *pki) identity(t testing.TB, name string, ca *testpki.CA, opts ...testpki.Option) (map[string]string, *testpki.Leaf) {
	leaf := ca.Issue(t, append([]testpki.Option{testpki.CN(name), testpki.ClientOnly()}, opts...)...)
	cert, key := leaf.WriteFiles(t, p.dir, name)
	return map[string]string{"source": "pem", "certificate": cert, "key": key}, leaf
}

func filePool(path string) map[string]any {
	return map[string]any{"provider": "file", "pem_files": []string{path}}
}

func TestClientIdentityAndVerification(t *testing.T) {
	p := newPKI(t)
	srv := backend(t, p.serverLeaf, p.proxyCA.Pool())
	addr := strings.TrimPrefix(srv.URL, "https://")
	ctx := testCtx(t)
	id, leaf := p.identity(t, "proxy", p.proxyCA)

	tr, err := newTransport(t, ctx, map[string]any{"client_identity": id, "tls": map[string]any{"ca": filePool(p.trustFile(t))}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := get(t, tr, srv.URL)
	if err != nil || got != leaf.Cert.SerialNumber.String() {
		t.Fatalf("right identity: %q, %v", got, err)
	}

	cases := []struct {
		name   string
		cfg    map[string]any
		reason string
	}{
		{"backend not in the trust pool", map[string]any{"client_identity": id, "tls": map[string]any{"ca": filePool(testpki.WriteFile(t, p.dir, "foreign.pem", p.foreignCA.CertPEM()))}}, tlsclient.ReasonUnknownAuthority},
		{"name mismatch", map[string]any{"client_identity": id, "tls": map[string]any{"ca": filePool(p.trustFile(t)), "server_name": "other.test"}}, tlsclient.ReasonNameMismatch},
		{"pinned SPIFFE ID mismatch", map[string]any{"client_identity": id, "tls": map[string]any{"ca": filePool(p.trustFile(t))}, "upstream_identity": []string{"spiffe://example.org/not-backend"}}, tlsclient.ReasonIdentityMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := failures(t, ctx, addr, tc.reason)
			tr, err := newTransport(t, ctx, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = get(t, tr, srv.URL)
			var he *tlsclient.HandshakeError
			if !errors.As(err, &he) || he.Reason != tc.reason {
				t.Fatalf("error %v, want a handshake error with reason %s", err, tc.reason)
			}
			if failures(t, ctx, addr, tc.reason) != before+1 {
				t.Fatalf("failure not counted under %s", tc.reason)
			}
		})
	}

	t.Run("pinned identities", func(t *testing.T) {
		for _, pin := range []string{"spiffe://example.org/backend", "spiffe://example.org", "backend.test"} {
			tr, err := newTransport(t, ctx, map[string]any{"client_identity": id, "tls": map[string]any{"ca": filePool(p.trustFile(t))}, "upstream_identity": []string{"spiffe://other.org/x", pin}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := get(t, tr, srv.URL); err != nil {
				t.Fatalf("pin %s: %v", pin, err)
			}
		}
	})

	expiredSrv := backend(t, p.backendCA.Issue(t, testpki.IP("127.0.0.1"), testpki.Expired()), p.proxyCA.Pool())
	t.Run("expired backend certificate", func(t *testing.T) {
		tr, _ := newTransport(t, ctx, map[string]any{"client_identity": id, "tls": map[string]any{"ca": filePool(p.trustFile(t))}})
		_, err := get(t, tr, expiredSrv.URL)
		if reason, _ := tlsclient.Classify(err); reason != tlsclient.ReasonExpired {
			t.Fatalf("error %v: reason %q, want expired", err, reason)
		}
	})
}

// TestBackendRefusal: the backend's verdict on the client identity (with
// TLS 1.3 it arrives after the handshake, with the first read).
func TestBackendRefusal(t *testing.T) {
	p := newPKI(t)
	srv := backend(t, p.serverLeaf, p.proxyCA.Pool())
	addr := strings.TrimPrefix(srv.URL, "https://")
	ctx := testCtx(t)
	foreign, _ := p.identity(t, "intruder", p.foreignCA)
	for _, tc := range []struct {
		name   string
		cfg    map[string]any
		reason string
	}{
		{"foreign CA", map[string]any{"client_identity": foreign, "tls": map[string]any{"ca": filePool(p.trustFile(t))}}, tlsclient.ReasonBadCertificate},
		{"no identity", map[string]any{"tls": map[string]any{"ca": filePool(p.trustFile(t))}}, tlsclient.ReasonCertificateRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := failures(t, ctx, addr, tc.reason)
			tr, err := newTransport(t, ctx, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = get(t, tr, srv.URL)
			if reason, alert := tlsclient.Classify(err); reason != tc.reason || alert == "" {
				t.Fatalf("error %v: reason %q alert %q, want %s", err, reason, alert, tc.reason)
			}
			if failures(t, ctx, addr, tc.reason) != before+1 {
				t.Fatalf("refusal not counted under %s", tc.reason)
			}
		})
	}
}

// TestRotation replaces the keystore under continuous requests: no request
// fails, and the backend sees the new certificate on every request soon
// after (the old connections are drained, not kept).
func TestRotation(t *testing.T) {
	p := newPKI(t)
	srv := backend(t, p.serverLeaf, p.proxyCA.Pool())
	ctx := testCtx(t)
	id, one := p.identity(t, "proxy", p.proxyCA)
	for _, versions := range [][]string{{"1.1"}, {"1.1", "2"}} {
		t.Run(strings.Join(versions, "+"), func(t *testing.T) {
			testpki.WriteFile(t, p.dir, "proxy.crt", one.CertPEM())
			testpki.WriteFile(t, p.dir, "proxy.key", one.KeyPEM())
			tr, err := newTransport(t, ctx, map[string]any{"client_identity": id, "tls": map[string]any{"ca": filePool(p.trustFile(t))}, "versions": versions})
			if err != nil {
				t.Fatal(err)
			}
			var failed atomic.Int32
			var latest sync.Map // worker -> serial
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						got, err := get(t, tr, srv.URL)
						if err != nil {
							failed.Add(1)
							t.Errorf("request failed: %v", err)
							return
						}
						latest.Store(w, got)
					}
				}()
			}
			time.Sleep(300 * time.Millisecond)
			two := p.proxyCA.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
			testpki.WriteFile(t, p.dir, "proxy.key", two.KeyPEM())
			testpki.WriteFile(t, p.dir, "proxy.crt", two.CertPEM())
			want := two.Cert.SerialNumber.String()
			deadline := time.Now().Add(5 * time.Second)
			for {
				all := true
				for w := 0; w < 8; w++ {
					if v, _ := latest.Load(w); v != want {
						all = false
					}
				}
				if all {
					break
				}
				if time.Now().After(deadline) {
					t.Error("some requests still present the old certificate 5s after the rotation")
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
			if failed.Load() > 0 {
				t.Fatalf("%d requests failed across the rotation", failed.Load())
			}
		})
	}
}

// TestLiveTrustPool: the pool is asked at each handshake, so a reloaded
// truststore applies to the next new connection.
func TestLiveTrustPool(t *testing.T) {
	p := newPKI(t)
	srv := backend(t, p.serverLeaf, p.proxyCA.Pool())
	ctx := testCtx(t)
	id, _ := p.identity(t, "proxy", p.proxyCA)
	testpki.SetPool("live", p.foreignCA.Pool())
	tr, err := newTransport(t, ctx, map[string]any{"client_identity": id, "tls": map[string]any{"ca": map[string]any{"provider": "testpki_swappable", "name": "live"}}, "keep_alive": map[string]any{"enabled": false}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, tr, srv.URL); err == nil {
		t.Fatal("trusted a backend outside the pool")
	}
	testpki.SetPool("live", p.backendCA.Pool())
	if _, err := get(t, tr, srv.URL); err != nil {
		t.Fatalf("after the pool gained the backend's CA: %v", err)
	}
	testpki.SetPool("live", nil)
	_, err = get(t, tr, srv.URL)
	if reason, _ := tlsclient.Classify(err); reason != tlsclient.ReasonUnknownAuthority {
		t.Fatalf("an empty live pool: %v (%s), want a refusal", err, reason)
	}
}

func TestProvisionErrors(t *testing.T) {
	p := newPKI(t)
	ctx := testCtx(t)
	id, _ := p.identity(t, "proxy", p.proxyCA)
	serverOnly := p.proxyCA.Issue(t, testpki.CN("srv"), testpki.ServerOnly())
	sc, sk := serverOnly.WriteFiles(t, p.dir, "srv")
	for _, tc := range []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"http/3", map[string]any{"client_identity": id, "versions": []string{"3"}}, "versions 3"},
		{"two client certificates", map[string]any{"client_identity": id, "tls": map[string]any{"client_certificate_file": "/a", "client_certificate_key_file": "/b"}}, "client_identity and tls_client_auth"},
		{"pin without verification", map[string]any{"upstream_identity": []string{"spiffe://a/b"}, "tls": map[string]any{"insecure_skip_verify": true}}, "tls_insecure_skip_verify"},
		{"bad pin", map[string]any{"upstream_identity": []string{"https://x"}}, "upstream_identity"},
		{"identity without clientAuth", map[string]any{"client_identity": map[string]string{"source": "pem", "certificate": sc, "key": sk}}, "lacks the clientAuth extended key usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newTransport(t, ctx, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// BenchmarkGetClientCertificate is the per-handshake identity lookup.
func BenchmarkGetClientCertificate(b *testing.B) {
	p := newPKI(b)
	id, _ := p.identity(b, "proxy", p.proxyCA)
	tr, err := newTransport(b, testCtx(b), map[string]any{"client_identity": id})
	if err != nil {
		b.Fatal(err)
	}
	get := tr.template.TLSClientConfig.GetClientCertificate
	cri := &tls.CertificateRequestInfo{}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if c, _ := get(cri); c == nil {
				b.Fatal("no certificate")
			}
		}
	})
}

// TestH1OnlyVar: a request that Caddy marks HTTP/1.1-only (protocol
// upgrades) gets an HTTP/1.1 connection from an HTTP/2-capable backend.
func TestH1OnlyVar(t *testing.T) {
	p := newPKI(t)
	srv := backend(t, p.serverLeaf, p.proxyCA.Pool())
	id, _ := p.identity(t, "proxy", p.proxyCA)
	tr, err := newTransport(t, testCtx(t), map[string]any{"client_identity": id, "tls": map[string]any{"ca": filePool(p.trustFile(t))}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		h1Only bool
		want   string
	}{{false, "HTTP/2.0"}, {true, "HTTP/1.1"}} {
		ctx := context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{caddyinternals.ReverseProxyH1OnlyVar: tc.h1Only})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Proto"); got != tc.want {
			t.Errorf("h1 only %v: backend saw %s, want %s", tc.h1Only, got, tc.want)
		}
		tr.current.Load().CloseIdleConnections()
	}
}

// TestStaticClientCertificateTransport: the mtls transport with Caddy's
// tls_client_auth (no client_identity) presents those PEM files.
func TestStaticClientCertificateTransport(t *testing.T) {
	p := newPKI(t)
	srv := backend(t, p.serverLeaf, p.proxyCA.Pool())
	_, leaf := p.identity(t, "proxy", p.proxyCA)
	cert, key := leaf.WriteFiles(t, p.dir, "static")
	tr, err := newTransport(t, testCtx(t), map[string]any{"tls": map[string]any{"ca": filePool(p.trustFile(t)),
		"client_certificate_file": cert, "client_certificate_key_file": key}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := get(t, tr, srv.URL); err != nil || got != leaf.Cert.SerialNumber.String() {
		t.Fatalf("backend saw %q, %v", got, err)
	}
}
