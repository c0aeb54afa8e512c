package integration

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/topology"
)

// topologySiteCaddyfile: a TLS site proxying in plaintext (a leg and a
// finding to draw) and an operations site serving the topology page behind
// basic_auth with the trustline_topology directive.
const topologySiteCaddyfile = `{
	admin {$TL_ADMIN}
	skip_install_trust
}
https://localhost:{$SITE_PORT} {
	tls internal
	reverse_proxy 10.255.0.1:8080
}
http://127.0.0.1:{$OPS_PORT} {
	handle /tls-topology {
		basic_auth {
			ops {$OPS_HASH}
		}
		trustline_topology {
			refresh 30
		}
	}
	handle /tls-topology.svg {
		basic_auth {
			ops {$OPS_HASH}
		}
		trustline_topology svg
	}
	handle /tls-topology.json {
		basic_auth {
			ops {$OPS_HASH}
		}
		trustline_topology json
	}
	respond 404
}
`

// TestTopologySite: the trustline_topology directive serves the topology
// page of the running config from a site, behind basic_auth, with the
// admin endpoint's headers; a browser that opens its URL directly (no
// Origin, no Referer) gets the page, where the admin API answers 403.
func TestTopologySite(t *testing.T) {
	bench.Need(t, "curl")
	hash, err := bcrypt.GenerateFromPassword([]byte("ops-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	site, ops := bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, topologySiteCaddyfile, "SITE_PORT="+bench.Port(site), "OPS_PORT="+bench.Port(ops), "OPS_HASH="+string(hash))
	base := "http://" + ops

	// no credentials: basic_auth answers before the page is made
	if out, _, _ := bench.Curl(t, "-o", "/dev/null", "-w", "%{http_code}", base+"/tls-topology"); out != "401" {
		t.Errorf("without credentials: HTTP %s, want 401", out)
	}
	// only GET and HEAD
	if out, _, _ := bench.Curl(t, "-u", "ops:ops-pass", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}", base+"/tls-topology"); out != "405" {
		t.Errorf("POST: HTTP %s, want 405", out)
	}

	for _, tc := range []struct{ path, ctype, has string }{
		{"/tls-topology", "text/html; charset=utf-8", `<meta http-equiv="refresh" content="30">`},
		{"/tls-topology.svg", "image/svg+xml", `<svg`},
	} {
		out, errOut, code := bench.Curl(t, "-u", "ops:ops-pass", "-D", "-", base+tc.path)
		if code != 0 {
			t.Fatalf("curl %s: exit %d: %s", tc.path, code, errOut)
		}
		head, body, _ := strings.Cut(out, "\r\n\r\n")
		for _, want := range []string{
			"HTTP/1.1 200",
			"Content-Type: " + tc.ctype,
			"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:",
			"X-Content-Type-Options: nosniff",
			"Cache-Control: no-store",
		} {
			if !strings.Contains(head, want) {
				t.Errorf("%s: no %q in the response headers:\n%s", tc.path, want, head)
			}
		}
		if !strings.Contains(body, tc.has) || !strings.Contains(body, `data-kind="http" data-after-termination="true"`) {
			t.Errorf("%s: the body lacks %q or the plaintext leg after termination:\n%.600s", tc.path, tc.has, body)
		}
	}

	// the JSON form is the report the admin endpoint gives
	out, _, _ := bench.Curl(t, "-u", "ops:ops-pass", base+"/tls-topology.json")
	fromSite := topologyJSON(t, out)
	fromAdmin := runningJSON(t, c.Admin)
	if len(fromSite.Listeners) != len(fromAdmin.Listeners) || len(fromSite.Findings) != len(fromAdmin.Findings) || len(fromSite.Listeners) != 2 {
		t.Errorf("the site's report has %d listeners and %d findings, the admin endpoint's %d and %d (want 2 listeners)",
			len(fromSite.Listeners), len(fromSite.Findings), len(fromAdmin.Listeners), len(fromAdmin.Findings))
	}
	for i := range fromSite.Listeners {
		if i < len(fromAdmin.Listeners) && fromSite.Listeners[i].Address != fromAdmin.Listeners[i].Address {
			t.Errorf("listener %d: %s from the site, %s from the admin endpoint", i, fromSite.Listeners[i].Address, fromAdmin.Listeners[i].Address)
		}
	}

	// a browser opening the URLs directly
	b := newBrowser(t)
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:ops-pass"))
	if err := chromedp.Do(b.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return err
	})); err != nil {
		t.Fatal(err)
	}
	if status := b.navigate(t, base+"/tls-topology"); status != http.StatusOK {
		t.Fatalf("the site answered a direct navigation with %d", status)
	}
	els := b.elements(t, base+"/tls-topology")
	checkPage(t, fromAdmin, els)
	var plain *topology.Outbound
	for _, l := range fromAdmin.Listeners {
		for _, rt := range l.Routes {
			for _, o := range rt.Outbound {
				plain = o
			}
		}
	}
	if plain == nil || !has(els, map[string]string{"data-leg": plain.Path, "data-direction": "out", "data-kind": "http", "data-after-termination": "true"}) {
		t.Errorf("the page does not show the plaintext leg after termination: %+v", plain)
	}
	b.screenshot(t, "topology-site")

	// what the directive is for: the admin API refuses the same navigation
	// (last, since the browser then asks the admin origin for a favicon)
	adminPage := "http://" + c.Admin + "/trustline/topology?format=html"
	if status := b.navigate(t, adminPage); status != http.StatusForbidden {
		t.Errorf("the admin API answered a direct navigation with %d; the documented reason for the directive is its 403", status)
	}
}

// navigate opens url as a typed URL does (no Referer, no Origin) and
// returns the HTTP status of the document.
func (b *browser) navigate(t *testing.T, url string) int64 {
	t.Helper()
	b.mu.Lock()
	b.requests, b.statuses, b.errors = nil, nil, nil
	b.mu.Unlock()
	resp, err := chromedp.Run(b.ctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
	return resp.Status
}

// elements returns the page's elements with legs, certificates and
// findings, after checking that the page asked for nothing but url and
// logged no error.
func (b *browser) elements(t *testing.T, url string) []element {
	t.Helper()
	els, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]element](`[...document.querySelectorAll('[data-leg],[data-cert],[data-finding],[data-finding-item]')].map(e => {
		const r = e.getBoundingClientRect();
		const attrs = {};
		for (const a of e.attributes) if (a.name.startsWith('data-')) attrs[a.name] = a.value;
		return {attrs: attrs, w: r.width, h: r.height};
	})`))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.requests {
		if r != url {
			t.Errorf("the page requested %s (beyond itself)", r)
		}
	}
	for _, e := range b.errors {
		t.Errorf("the page logged an error: %s", e)
	}
	return els
}

// TestTopologySiteStoresDecryptedOnce: the trustline_topology page reads
// every keystore and truststore of the running config; a site may expose
// it, so its requests must not each decrypt them (a PKCS#12 store costs a
// PBKDF2 derivation). Through the real binary, many requests (one after
// the other and at once) read each store once (Caddy's debug log says so
// per read); a new version of a keystore is read once more; requests over
// the bound on reports made at once get 503 with Retry-After, never an
// error.
func TestTopologySiteStoresDecryptedOnce(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "site store ca")
	keystore := testpki.WriteFile(t, dir, "proxy.p12", testpki.PKCS12Keystore(t, ca.Issue(t, testpki.CN("proxy"), testpki.ClientOnly()), "store-pass", false))
	truststore := testpki.WriteFile(t, dir, "trust.p12", testpki.PKCS12Truststore(t, []*x509.Certificate{ca.Cert}, "store-pass", false))
	ops := bench.FreeAddr(t)
	c := bench.Start(t, `{
	admin {$TL_ADMIN}
	skip_install_trust
	debug
}
http://127.0.0.1:{$OPS_PORT} {
	handle /tls-topology.json {
		trustline_topology json
	}
	handle /app {
		reverse_proxy https://127.0.0.1:1 {
			transport mtls {
				client_identity pkcs12 {$STORE_DIR}/proxy.p12 {
					password {env.STORE_PASS}
				}
				trust_pool truststore {$STORE_DIR}/trust.p12 {
					password {env.STORE_PASS}
				}
			}
		}
	}
}
`, "OPS_PORT="+bench.Port(ops), "STORE_DIR="+dir, "STORE_PASS=store-pass")
	page := "http://" + ops + "/tls-topology.json"
	get := func() (int, string, string) {
		resp, err := http.Get(page)
		if err != nil {
			t.Error(err)
			return 0, "", ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(body)
	}
	reads := func(store string) int {
		return strings.Count(c.Log(), `"store":"`+store+`"`)
	}

	for range 5 {
		if status, _, body := get(); status != http.StatusOK || !strings.Contains(body, `"subject": "CN=proxy"`) {
			t.Fatalf("HTTP %d: %.400s", status, body)
		}
	}
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			status, retry, body := get()
			if status != http.StatusOK && (status != http.StatusServiceUnavailable || retry == "") {
				t.Errorf("concurrent request: HTTP %d, Retry-After %q: %.300s", status, retry, body)
			}
		})
	}
	wg.Wait()
	if k, tr := reads("pkcs12 "+keystore), reads("truststore "+truststore); k != 1 || tr != 1 {
		t.Errorf("17 reports read the keystore %d times and the truststore %d times, want once each:\n%s", k, tr, grepLines(c.Log(), "trustline.topology"))
	}

	// a new version of the keystore is read once more
	next := testpki.WriteFile(t, t.TempDir(), "proxy.p12", testpki.PKCS12Keystore(t, ca.Issue(t, testpki.CN("proxy-2"), testpki.ClientOnly()), "store-pass", false))
	if err := os.Rename(next, keystore); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if status, _, body := get(); status != http.StatusOK || !strings.Contains(body, `"subject": "CN=proxy-2"`) {
			t.Fatalf("after the keystore changed: HTTP %d: %.400s", status, body)
		}
	}
	if k := reads("pkcs12 " + keystore); k != 2 {
		t.Errorf("after the keystore changed: read %d times, want 2", k)
	}
}
