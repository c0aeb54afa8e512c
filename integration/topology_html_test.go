package integration

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/modules/topology"
)

// browser is a headless Chromium tab that records every network request
// and every error the page logs (a CSP violation among them).
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	requests []string
	statuses []int64
	errors   []string
}

// newBrowser starts Debian's chromium headless (without its sandbox: the
// tests run as root) for the test.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := bench.Need(t, "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 1000), chromedp.Flag("disable-gpu", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, e.Request.URL)
		case *network.EventResponseReceived:
			b.statuses = append(b.statuses, e.Response.Status)
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				b.errors = append(b.errors, string(e.Entry.Source)+": "+e.Entry.Text)
			}
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return b
}

// element is what the page shows of one element with data attributes.
type element struct {
	Attrs map[string]string `json:"attrs"`
	W     float64           `json:"w"`
	H     float64           `json:"h"`
}

// load navigates to url and returns the page's elements with legs,
// certificates and findings, after checking that the page asked for
// nothing but itself and logged no error.
//
// Caddy's admin API refuses a browser request that carries Sec-Fetch-Mode
// but neither Origin nor Referer (403 "client is not allowed to access
// from origin ”"), which is what typing the URL sends; the navigation
// therefore comes from the admin origin itself, as a link on it would.
func (b *browser) load(t *testing.T, url string) []element {
	t.Helper()
	b.mu.Lock()
	b.requests, b.statuses, b.errors = nil, nil, nil
	b.mu.Unlock()
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	loaded := chromedp.Events(ctx, page.LoadEventFired)
	referrer := url[:strings.Index(url, "/trustline/")+1]
	if err := chromedp.Do(b.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, page.Navigate, page.NavigateParams{URL: url, Referrer: referrer})
		if err == nil && res.ErrorText != "" {
			err = errors.New(res.ErrorText)
		}
		return err
	})); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
	for _, err := range loaded {
		if err != nil {
			t.Fatalf("loading %s: %v", url, err)
		}
		break
	}
	// the inline style applies under the page's CSP: an mTLS leg is green
	stroke, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(() => { const p = document.querySelector('g.leg path'); return p ? getComputedStyle(p).stroke : 'none'; })()`))
	if err != nil || stroke == "none" || stroke == "" || stroke == "rgb(0, 0, 0)" {
		t.Errorf("the page's style did not apply (legs drawn with stroke %q, %v)", stroke, err)
	}
	els := b.elements(t, url)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.statuses) == 0 || b.statuses[0] != http.StatusOK {
		t.Fatalf("the admin API answered %v", b.statuses)
	}
	if len(b.requests) == 0 {
		t.Error("no request seen: the network events are not recorded")
	}
	return els
}

// screenshot saves the page as a PNG in a temp dir and logs its path.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.TempDir(), name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the topology page: %s (%d bytes)", path, len(png))
}

// has reports whether a drawn (non-empty) element has all the attributes.
func has(els []element, want map[string]string) bool {
	for _, e := range els {
		ok := e.W > 0 && e.H > 0
		for k, v := range want {
			if e.Attrs[k] != v {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// runningJSON is the JSON report of the running Caddy at admin.
func runningJSON(t *testing.T, admin string) *topology.Report {
	t.Helper()
	status, body := (&bench.Caddy{Admin: admin}).AdminGet(t, "/trustline/topology?format=json")
	if status != http.StatusOK {
		t.Fatalf("GET /trustline/topology: HTTP %d: %s", status, body)
	}
	return topologyJSON(t, body)
}

// checkPage asserts that every leg (with its kind), every certificate at
// a TLS end and every finding of the JSON report is drawn in the page.
func checkPage(t *testing.T, rep *topology.Report, els []element) {
	t.Helper()
	legs := 0
	for _, l := range rep.Listeners {
		for _, rt := range l.Routes {
			legs++
			if !has(els, map[string]string{"data-leg": rt.Path, "data-direction": "in", "data-kind": rt.Inbound.Mode}) {
				t.Errorf("inbound leg %s (%s) not in the page", rt.Path, rt.Inbound.Mode)
			}
			certs := append([]string{}, rt.Inbound.Certificates...)
			for _, o := range rt.Outbound {
				legs++
				if !has(els, map[string]string{"data-leg": o.Path, "data-direction": "out", "data-kind": o.Mode}) {
					t.Errorf("outbound leg %s (%s) not in the page", o.Path, o.Mode)
				}
				certs = append(certs, o.ClientCertificates...)
			}
			for _, c := range certs {
				cert := rep.Certificate(c)
				if cert == nil || !has(els, map[string]string{"data-cert": c, "data-role": cert.Role}) {
					t.Errorf("certificate %s of %s not in the page", c, rt.Path)
				}
			}
		}
	}
	if legs == 0 {
		t.Fatal("the report has no leg")
	}
	for _, f := range rep.Findings {
		if !has(els, map[string]string{"data-finding": f.Kind, "data-finding-path": f.Path, "data-severity": string(f.Severity)}) {
			t.Errorf("finding %s at %s not on an element of the page", f.Kind, f.Path)
		}
		if !has(els, map[string]string{"data-finding-item": f.Kind, "data-finding-path": f.Path}) {
			t.Errorf("finding %s at %s not in the page's list", f.Kind, f.Path)
		}
	}
}

// checkHeaders: the page comes with a CSP that forbids any fetch and any
// script; the SVG form is image/svg+xml.
func checkHeaders(t *testing.T, admin string) {
	t.Helper()
	for format, ctype := range map[string]string{"html": "text/html; charset=utf-8", "svg": "image/svg+xml"} {
		resp, err := http.Get("http://" + admin + "/trustline/topology?format=" + format)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ctype {
			t.Errorf("format=%s: HTTP %d, Content-Type %q", format, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'; style-src 'unsafe-inline'; img-src data:") {
			t.Errorf("format=%s: Content-Security-Policy %q", format, csp)
		}
	}
}

// TestTopologyPageHybridProxy: the admin page of the hybrid-proxy example
// in a real browser shows the legs, certificates and findings of the
// report, fetches nothing else, and shows a reload that turns case 3's
// mTLS leg to the origin into plaintext.
func TestTopologyPageHybridProxy(t *testing.T) {
	bench.Need(t, "nginx")
	b := newBrowser(t)
	env := []string{}
	for n := 1; n <= 4; n++ {
		env = append(env, "CASE"+strconv.Itoa(n)+"_PORT="+bench.Port(bench.FreeAddr(t)))
	}
	originHTTP, originTLS, originMTLS, admin := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	env = append(env, "ORIGIN_HTTP_PORT="+bench.Port(originHTTP), "ORIGIN_TLS_PORT="+bench.Port(originTLS),
		"ORIGIN_MTLS_PORT="+bench.Port(originMTLS), "TL_ADMIN="+admin)
	runExample(t, "hybrid-proxy", env...)
	checkHeaders(t, admin)

	page := "http://" + admin + "/trustline/topology?format=html"
	rep := runningJSON(t, admin)
	els := b.load(t, page)
	checkPage(t, rep, els)
	b.screenshot(t, "hybrid-proxy")

	// the mTLS leg of case 3, found in the report
	var mtls *topology.Outbound
	for _, l := range rep.Listeners {
		for _, rt := range l.Routes {
			for _, o := range rt.Outbound {
				if o.Mode == topology.OutMTLS {
					mtls = o
				}
			}
		}
	}
	if mtls == nil || !has(els, map[string]string{"data-leg": mtls.Path, "data-kind": "mtls"}) {
		t.Fatalf("no mTLS leg to the origin in the report or the page: %+v", mtls)
	}

	// reload: case 3 now proxies to the origin's plain HTTP listener
	_, cfgJSON := (&bench.Caddy{Admin: admin}).AdminGet(t, "/config/")
	var cfg any
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		t.Fatal(err)
	}
	if n := toPlaintext(cfg, bench.Port(originMTLS), originHTTP); n != 1 {
		t.Fatalf("%d reverse_proxy handlers to the origin's mTLS port in the running config, want 1", n)
	}
	newCfg, _ := json.Marshal(cfg)
	if err := (&bench.Caddy{Admin: admin}).LoadJSON(t, newCfg); err != nil {
		t.Fatal(err)
	}
	after := runningJSON(t, admin)
	els = b.load(t, page)
	checkPage(t, after, els)
	if has(els, map[string]string{"data-leg": mtls.Path, "data-kind": "mtls"}) ||
		!has(els, map[string]string{"data-leg": mtls.Path, "data-kind": "http", "data-after-termination": "true"}) {
		t.Errorf("after the reload the page does not show %s as plaintext after termination", mtls.Path)
	}
	b.screenshot(t, "hybrid-proxy-after-reload")
}

// toPlaintext rewrites, in a JSON config, each reverse_proxy handler that
// dials the given port to dial plain HTTP at addr (no transport); it
// returns how many it rewrote.
func toPlaintext(v any, port, addr string) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		if v["handler"] == "reverse_proxy" {
			ups, _ := v["upstreams"].([]any)
			if len(ups) == 1 {
				if u, _ := ups[0].(map[string]any); u != nil && strings.HasSuffix(u["dial"].(string), ":"+port) {
					delete(v, "transport")
					v["upstreams"] = []any{map[string]any{"dial": addr}}
					return 1
				}
			}
		}
		for _, x := range v {
			n += toPlaintext(x, port, addr)
		}
	case []any:
		for _, x := range v {
			n += toPlaintext(x, port, addr)
		}
	}
	return n
}

// TestTopologyPageL4MTLS: the admin page of the l4-mtls example shows
// mTLS in and mTLS out at layer 4, with PROXY v2, and the certificates.
func TestTopologyPageL4MTLS(t *testing.T) {
	bench.Need(t, "nginx")
	b := newBrowser(t)
	db, backend, site, admin := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	runExample(t, "l4-mtls", "DB_PORT="+bench.Port(db), "BACKEND_PORT="+bench.Port(backend),
		"SITE_PORT="+bench.Port(site), "TL_ADMIN="+admin, "CLIENT_P12_PASSWORD=test-secret")
	checkHeaders(t, admin)
	page := "http://" + admin + "/trustline/topology?format=html&refresh=30"
	rep := runningJSON(t, admin)
	els := b.load(t, page)
	checkPage(t, rep, els)
	var l4 *topology.Route
	for _, l := range rep.Listeners {
		if l.App == "layer4" && len(l.Routes) == 1 {
			l4 = l.Routes[0]
		}
	}
	if l4 == nil || len(l4.Outbound) != 1 {
		t.Fatalf("no layer-4 route with one outbound leg: %+v", rep.Listeners)
	}
	if !has(els, map[string]string{"data-leg": l4.Path, "data-direction": "in", "data-kind": "mtls"}) ||
		!has(els, map[string]string{"data-leg": l4.Outbound[0].Path, "data-kind": "mtls", "data-proxy-protocol": "v2"}) {
		t.Error("the page does not show mTLS in and mTLS out with PROXY v2 at layer 4")
	}
	b.screenshot(t, "l4-mtls")
}
