package topology

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/material"
	_ "github.com/trustline/trustline/modules/upstream"
)

// resetStoreCache forgets every store read.
func resetStoreCache() {
	storeCache.Lock()
	defer storeCache.Unlock()
	storeCache.m = map[storeKey]*storeRead{}
}

// countDecrypts makes the report's store reads count (and, with block,
// wait) and returns the counters of keystore and truststore decrypts.
func countDecrypts(t *testing.T, block <-chan struct{}) (keys, trusts *atomic.Int64) {
	keys, trusts = new(atomic.Int64), new(atomic.Int64)
	origKey, origTrust := readKeyStore, readTrustAnchors
	readKeyStore = func(data []byte, opts material.StoreOptions) (*tls.Certificate, error) {
		keys.Add(1)
		if block != nil {
			<-block
		}
		return origKey(data, opts)
	}
	readTrustAnchors = func(data []byte, opts material.StoreOptions) ([]*x509.Certificate, error) {
		trusts.Add(1)
		return origTrust(data, opts)
	}
	t.Cleanup(func() { readKeyStore, readTrustAnchors = origKey, origTrust })
	resetStoreCache()
	t.Cleanup(resetStoreCache)
	return keys, trusts
}

// runStoreConfig makes Caddy (in this process) run a config whose mtls
// transport presents a PKCS#12 keystore and verifies against a PKCS#12
// truststore, and returns the trustline_topology handler serving its
// report, and the keystore's path.
func runStoreConfig(t *testing.T) (*Handler, string) {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Cache CA")
	leaf := ca.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	p12 := testpki.WriteFile(t, dir, "proxy.p12", testpki.PKCS12Keystore(t, leaf, "store-pass", false))
	trust := testpki.WriteFile(t, dir, "trust.p12", testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "store-pass", false))
	cfg := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"t":{"listen":["127.0.0.1:0"],"routes":[{"handle":[
		{"handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:1"}],"transport":{"protocol":"mtls",
		 "client_identity":{"source":"pkcs12","path":"` + p12 + `","password":"store-pass"},
		 "tls":{"ca":{"provider":"truststore","path":"` + trust + `","password":"store-pass"}}}}]}]}}}}}`
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Load([]byte(`{"admin":{"disabled":true}}`), true) })
	h := &Handler{Format: "json"}
	if err := h.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	return h, p12
}

func get(t *testing.T, h *Handler) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/tls-topology", nil)
	if err := h.ServeHTTP(w, r, nil); err != nil {
		var he caddyhttp.HandlerError
		if errors.As(err, &he) {
			w.Code = he.StatusCode
			return w
		}
		t.Fatalf("ServeHTTP: %v", err)
	}
	return w
}

// TestReportsDecryptStoresOnce: the trustline_topology page a site may
// expose reads every keystore and truststore of the running config; a
// PKCS#12 store costs a PBKDF2 derivation per read. N requests, one after
// the other and at the same time, decrypt each unchanged store once; a
// new version of the file is read again.
func TestReportsDecryptStoresOnce(t *testing.T) {
	keys, trusts := countDecrypts(t, nil)
	h, p12 := runStoreConfig(t)
	for range 5 {
		if w := get(t, h); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"subject": "CN=proxy"`) {
			t.Fatalf("HTTP %d: %.300s", w.Code, w.Body.String())
		}
	}
	var wg sync.WaitGroup
	for range 2 * maxReports {
		wg.Go(func() { get(t, h) })
	}
	wg.Wait()
	if keys.Load() != 1 || trusts.Load() != 1 {
		t.Errorf("%d reports decrypted the keystore %d times and the truststore %d times, want once each", 5+2*maxReports, keys.Load(), trusts.Load())
	}

	// a new keystore at the same path is a new version: read once more
	ca := testpki.NewCA(t, "Cache CA 2")
	testpki.WriteFile(t, filepath.Dir(p12), "proxy.p12", testpki.PKCS12Keystore(t, ca.Issue(t, testpki.CN("proxy-2")), "store-pass", false))
	for range 3 {
		if w := get(t, h); !strings.Contains(w.Body.String(), `"subject": "CN=proxy-2"`) {
			t.Fatalf("the report does not show the new keystore: %.300s", w.Body.String())
		}
	}
	if keys.Load() != 2 {
		t.Errorf("after the keystore changed: %d decrypts, want 2", keys.Load())
	}
}

// TestReportsBounded: at most maxReports reports are made at once (the
// admin endpoint, the trustline_topology handler and the metrics share
// the bound); a request over it waits briefly, then gets 503 with
// Retry-After, from the handler and from the admin endpoint alike.
func TestReportsBounded(t *testing.T) {
	block := make(chan struct{})
	countDecrypts(t, block)
	h, _ := runStoreConfig(t)
	origWait := reportWait
	reportWait = 50 * time.Millisecond
	t.Cleanup(func() { reportWait = origWait })

	// maxReports requests, stuck on the keystore's decrypt
	var wg sync.WaitGroup
	codes := make(chan int, maxReports)
	for range maxReports {
		wg.Go(func() { codes <- get(t, h).Code })
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(reportSlots) < maxReports {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d reports started", len(reportSlots), maxReports)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// one more: 503 with Retry-After
	w := httptest.NewRecorder()
	err := h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/tls-topology", nil), nil)
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("handler over the bound: %v, Retry-After %q; want 503 with Retry-After", err, w.Header().Get("Retry-After"))
	}
	w = httptest.NewRecorder()
	err = serveTopology(w, httptest.NewRequest(http.MethodGet, routePattern, nil))
	if apiErr, ok := err.(caddy.APIError); !ok || apiErr.HTTPStatus != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("admin endpoint over the bound: %v, Retry-After %q; want 503 with Retry-After", err, w.Header().Get("Retry-After"))
	}
	// the metrics skip a scrape rather than pile up
	done := make(chan struct{})
	go func() {
		ch := make(chan prometheus.Metric, 100)
		collector{logger: caddy.Log()}.Collect(ch)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("the metrics collector waits for a slot without bound")
	}

	close(block)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("a report within the bound: HTTP %d", c)
		}
	}
	if len(reportSlots) != 0 {
		t.Errorf("%d report slots still held", len(reportSlots))
	}
}
