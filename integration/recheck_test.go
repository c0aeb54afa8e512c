package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// keptClient makes requests over one kept connection (HTTP/1.1, HTTP/2 or
// HTTP/3) and says whether each reused it.
type keptClient struct {
	t      *testing.T
	url    string
	client *http.Client
	close  func()
}

func newKeptClient(t *testing.T, proto, url string, serverCA *x509.CertPool, leaf *testpki.Leaf) *keptClient {
	t.Helper()
	cfg := &tls.Config{RootCAs: serverCA, ServerName: "localhost", Certificates: []tls.Certificate{leaf.TLS()}}
	var rt http.RoundTripper
	closeFn := func() {}
	switch proto {
	case "h3":
		tr := &http3.Transport{TLSClientConfig: cfg}
		rt, closeFn = tr, func() { tr.Close() }
	default:
		tr := &http.Transport{TLSClientConfig: cfg, MaxConnsPerHost: 1, ForceAttemptHTTP2: proto == "h2"}
		if proto == "h1" {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		rt, closeFn = tr, tr.CloseIdleConnections
	}
	k := &keptClient{t: t, url: url, client: &http.Client{Transport: rt, Timeout: 5 * time.Second}, close: closeFn}
	t.Cleanup(closeFn)
	return k
}

// get returns the status and body, whether the request reused an open
// connection (HTTP/1.1 and HTTP/2), and the error.
func (k *keptClient) get() (int, string, bool, error) {
	var reused atomic.Bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, "", reused.Load(), err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), reused.Load(), nil
}

// TestTrustChangeReachesOpenConnections: a client admitted over a kept
// connection loses its access as soon as its CA is removed from the live
// bundle, over HTTP/1.1, HTTP/2 and HTTP/3, and so does one on a layer-4
// route (terminate_tls): the connections whose chain no longer verifies
// are closed (HTTP/1.1, HTTP/2, layer 4) or lose their identity at once
// (HTTP/3: Caddy has no connection hook there), with the reason in the
// log; a client of a CA that stays keeps its connection. Before, such a
// client kept getting 200 with its full identity.
func TestTrustChangeReachesOpenConnections(t *testing.T) {
	p := newPeerPKI(t)
	stays, goes := testpki.NewCA(t, "CA that stays"), testpki.NewCA(t, "CA that goes")
	dir := filepath.Join(p.dir, "cas")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testpki.WriteFile(t, dir, "stays.pem", stays.CertPEM())
	goesFile := testpki.WriteFile(t, dir, "goes.pem", goes.CertPEM())

	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()

	site, l4 := bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	servers {
		protocols h1 h2 h3
	}
	layer4 {
		%[5]s {
			route {
				terminate_tls {
					connection_policy {
						client_auth {
							verifier live_trust bundle %[4]s
						}
					}
				}
				proxy %[6]s
			}
		}
	}
}
https://localhost:%[1]s {
	tls %[2]s %[3]s {
		client_auth {
			verifier live_trust bundle %[4]s
		}
	}
	peer_authorize dns:*.example
	peer_identity
	respond "{peer.dns}"
}
`, bench.Port(site), p.srvCert, p.srvKey, dir, l4, echo.Addr()))
	_ = c

	goer := goes.Issue(t, testpki.DNS("goer.example"), testpki.ClientOnly())
	stayer := stays.Issue(t, testpki.DNS("stayer.example"), testpki.ClientOnly())
	url := "https://localhost:" + bench.Port(site) + "/"
	type kept struct {
		proto string
		k     *keptClient
	}
	var goers, stayers []kept
	for _, proto := range []string{"h1", "h2", "h3"} {
		g, s := newKeptClient(t, proto, url, p.root.Pool(), goer), newKeptClient(t, proto, url, p.root.Pool(), stayer)
		for _, k := range []*keptClient{g, s} {
			if code, body, _, err := k.get(); err != nil || code != 200 || !strings.HasSuffix(body, ".example") {
				t.Fatalf("%s before the change: %d %q %v", proto, code, body, err)
			}
		}
		goers, stayers = append(goers, kept{proto, g}), append(stayers, kept{proto, s})
	}
	// layer 4: a TLS connection to the echo backend
	l4conn, err := tls.Dial("tcp", l4, &tls.Config{RootCAs: p.root.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{goer.TLS()}})
	if err != nil {
		t.Fatal(err)
	}
	defer l4conn.Close()
	echoOnce := func() error {
		_ = l4conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := l4conn.Write([]byte("ping\n")); err != nil {
			return err
		}
		buf := make([]byte, 5)
		_, err := io.ReadFull(l4conn, buf)
		return err
	}
	if err := echoOnce(); err != nil {
		t.Fatalf("layer 4 before the change: %v", err)
	}

	if err := os.Remove(goesFile); err != nil {
		t.Fatal(err)
	}
	c.WaitLog(t, `"certificates":1`, 5*time.Second) // the bundle reloaded without the CA
	changed := time.Now()

	for _, g := range goers {
		deadline := changed.Add(2 * time.Second)
		for {
			code, body, _, err := g.k.get()
			if err != nil || code != 200 {
				t.Logf("%s: the removed CA's client lost its access %s after the reload (%d %q %v)", g.proto, time.Since(changed).Round(time.Millisecond), code, body, err)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the removed CA's client still gets %d %q over its open connection %s after the reload", g.proto, code, body, time.Since(changed))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	deadline := changed.Add(2 * time.Second)
	for echoOnce() == nil {
		if time.Now().After(deadline) {
			t.Fatal("layer 4: the removed CA's client's connection still carries data 2s after the reload")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range stayers {
		code, body, reused, err := s.k.get()
		if err != nil || code != 200 || body != "stayer.example" || (s.proto != "h3" && !reused) {
			t.Fatalf("%s: the staying CA's client: %d %q reused=%v %v", s.proto, code, body, reused, err)
		}
	}
	c.WaitLog(t, `"msg":"connection closed: its peer's verification no longer holds"`, 2*time.Second)
	if !strings.Contains(c.Log(), `"reason":"unknown_authority"`) {
		t.Error("the closing log line lacks the reason")
	}
	if m := c.Metrics(t); !strings.Contains(m, `trustline_client_verdicts_total{reason="unknown_authority",verdict="refused",verifier="recheck"}`) {
		t.Error("the closed connections are not counted")
	}
}
